"""Organ statistics of the training split, recorded in the plan at train start so every checkpoint carries them.

Training passes :func:`organ_measure` to the one survey of the training data
(``rtseg.data.survey``): every training case is measured on its own grid (before resampling:
volumes and positions as the clinic sees them) with :func:`rtseg.review.organ_stats.case_facts`
in the same read that prepares it, and :func:`organ_stats` summarizes them as ``plan["organ_stats"]``.
Partially labelled cases count only for the organs contoured in them.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from rtseg.config.schema import Config
from rtseg.data.datasets import CaseRef, list_cases, load_partial_labels
from rtseg.data.survey import CaseMeasure, Survey, survey_cases
from rtseg.io.volume import Volume
from rtseg.labels import IGNORE_INDEX
from rtseg.review.organ_stats import case_facts, summarize

KEY = "organ_stats"


def organ_measure(class_names: Sequence[str], known: Optional[dict[str, list[int]]],
                  absent_is_unknown: bool) -> CaseMeasure:
    """The survey's per-case measurement: ``case_facts`` of the organs contoured in the case."""
    names = list(class_names)
    known = known or {}

    def measure(ref: CaseRef, ct: Volume, label: Volume) -> dict[str, Any]:
        labels = np.where(label.array == IGNORE_INDEX, 0, label.array)  # unknown voxels count as no organ
        present = known.get(ref.case_id)
        if present is None and absent_is_unknown:
            present = [int(c) for c in np.unique(labels)]
        return case_facts(labels, ct.affine, names, ct.array, present)

    return measure


def organ_stats(survey: Survey, class_names: Sequence[str]) -> dict[str, Any]:
    """The ``plan["organ_stats"]`` summary of a survey made with :func:`organ_measure`."""
    return summarize(survey.measures(), list(class_names))


def training_organ_stats(cfg: Config) -> dict[str, Any]:
    """The organ statistics of DATASET.TRAIN_SPLIT on their own (a survey of the split, partial labels respected)."""
    d = cfg.DATASET
    names = d.class_names()
    refs = list_cases(d, d.TRAIN_SPLIT)
    known = load_partial_labels(d.PARTIAL_LABELS, [r.case_id for r in refs], names) if d.PARTIAL_LABELS else None
    survey = survey_cases(refs, d.N_CLASSES, organ_measure(names, known, d.ABSENT_IS_UNKNOWN), desc="organ statistics")
    return organ_stats(survey, names)
