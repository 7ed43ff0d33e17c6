"""Organ statistics of the training split, recorded in the plan at train start so every checkpoint carries them.

``rtseg.training`` calls :func:`plan_with_organ_stats` once; it measures every training case
on its own grid (before resampling: volumes and positions as the clinic sees them) with
:func:`rtseg.review.organ_stats.case_facts` and stores the summary as ``plan["organ_stats"]``.
Partially labelled cases count only for the organs contoured in them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from rtseg.config.schema import Config
from rtseg.labels import IGNORE_INDEX
from rtseg.data.datasets import list_cases, load_case, load_partial_labels
from rtseg.io.jsonfile import write_json
from rtseg.review.organ_stats import case_facts, summarize

log = logging.getLogger("rtseg")

KEY = "organ_stats"


def training_organ_stats(cfg: Config) -> dict[str, Any]:
    """``summarize(case_facts(...))`` over the training split (DATASET.TRAIN_SPLIT), partial labels respected."""
    d = cfg.DATASET
    names = d.class_names()
    refs = list_cases(d, d.TRAIN_SPLIT)
    known = load_partial_labels(d.PARTIAL_LABELS, [r.case_id for r in refs], names) if d.PARTIAL_LABELS else {}
    facts = []
    for ref in tqdm(refs, desc="organ statistics", unit="case", leave=False, disable=len(refs) < 4):
        ct, lab = load_case(ref, d.N_CLASSES)
        labels = np.where(lab.array == IGNORE_INDEX, 0, lab.array)  # unknown voxels count as no organ
        present = known.get(ref.case_id)
        if present is None and d.ABSENT_IS_UNKNOWN:
            present = [int(c) for c in np.unique(labels)]
        facts.append(case_facts(labels, ct.affine, names, ct.array, present))
    return summarize(facts, names)


def plan_with_organ_stats(cfg: Config, plan: Optional[dict[str, Any]], plan_json: Optional[Path] = None) -> dict[str, Any]:
    """``plan`` (or a new one holding only them) with ``organ_stats``, written to ``plan_json`` when given.

    A plan that already holds them (a resumed run) is returned as it is."""
    if plan is not None and KEY in plan:
        return plan
    out = {**(plan or {}), KEY: training_organ_stats(cfg)}
    log.info("organ statistics of %d training case(s) recorded for contour QA", out[KEY]["n_cases"])
    if plan_json is not None:
        write_json(out, plan_json)
    return out
