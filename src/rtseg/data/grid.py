"""Which grid the network trains on: the one place that decides it.

Precedence, item by item (normalization, window, spacing, patch size):

1. a resumed checkpoint: its preprocessing and patch, whole (nothing drifts across a resume);
2. an explicit config key (``DATASET.NORMALIZE``, ``HU_WINDOW``, ``SPACING``, ``PATCH_SIZE``);
3. the plan (``DATASET.PLAN``: a file, or ``auto`` computed from the survey);
4. the training data themselves (``rtseg.data.survey``): dataset intensity statistics for
   ``zscore_dataset``, the stored spacing when all cases share one, and the largest patch
   that fits the smallest training volume.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from rtseg.config.schema import DatasetConfig
from rtseg.data.normalization import Normalization
from rtseg.data.plan import Plan
from rtseg.data.preprocess import Preprocessing
from rtseg.data.resample import target_shape
from rtseg.data.survey import Survey

log = logging.getLogger("rtseg")

AUTO_PATCH_CAP = 128


@dataclass(frozen=True)
class Grid:
    """What the network sees: the preprocessing (saved in checkpoints) and the training patch."""

    preprocessing: Preprocessing
    patch_size: tuple[int, int, int]


def needs_survey(dataset_cfg: DatasetConfig, plan: Optional[Plan]) -> bool:
    """True when the preprocessing depends on the data (so cases are held until the survey is complete)."""
    if plan is None and dataset_cfg.PLAN == "auto":
        return True
    mode = _mode(dataset_cfg, plan)
    return mode == "zscore_dataset" and (plan is None or plan.normalization.mean is None)


def _mode(dataset_cfg: DatasetConfig, plan: Optional[Plan]) -> str:
    if plan is not None and "NORMALIZE" not in dataset_cfg.model_fields_set:
        return plan.normalization.mode
    return dataset_cfg.NORMALIZE


def choose_preprocessing(dataset_cfg: DatasetConfig, plan: Optional[Plan], survey: Optional[Survey]) -> Preprocessing:
    """Levels 2-4 of the precedence for the preprocessing; ``survey`` may be None only when
    :func:`needs_survey` is False (the common stored spacing is then added by :func:`complete_grid`)."""
    mode = _mode(dataset_cfg, plan)
    window = tuple(dataset_cfg.HU_WINDOW)
    mean = std = None
    if plan is not None and mode == "zscore_dataset" and plan.normalization.mean is not None:
        mean, std = plan.normalization.mean, plan.normalization.std
        if "HU_WINDOW" not in dataset_cfg.model_fields_set and plan.normalization.window is not None:
            window = tuple(plan.normalization.window)
    if mode == "zscore_dataset" and mean is None:
        if survey is None:
            raise ValueError("zscore_dataset without plan statistics needs the survey")
        mean, std, window = survey.intensity_statistics(window)  # type: ignore[arg-type, assignment]
    spacing = dataset_cfg.SPACING
    if spacing is None and plan is not None:
        spacing = plan.target_spacing
    return Preprocessing(Normalization(mode, window, mean, std), spacing)  # type: ignore[arg-type]


def complete_grid(dataset_cfg: DatasetConfig, plan: Optional[Plan], preprocessing: Preprocessing, survey: Survey,
                  stride: int) -> Grid:
    """The spacing recorded for stored-spacing training and the patch (config, plan, else the data)."""
    if preprocessing.target_spacing is None:
        preprocessing = _with_common_spacing(preprocessing, survey)
    patch = dataset_cfg.PATCH_SIZE
    if patch is None and plan is not None:
        patch = plan.patch_size
    if patch is None:
        patch = auto_patch_size(network_shapes(survey, preprocessing), stride)
    return Grid(preprocessing, tuple(int(p) for p in patch))  # type: ignore[arg-type]


def network_shapes(survey: Survey, preprocessing: Preprocessing) -> np.ndarray:
    """Each training case's shape on the network grid (what ``to_network_grid`` makes of it)."""
    target = preprocessing.target_spacing
    if target is None:
        return survey.shapes
    return np.array([target_shape(tuple(s), tuple(p), tuple(target)) for s, p in zip(survey.shapes, survey.spacings)])


def auto_patch_size(shapes: np.ndarray, stride: int, cap: int = AUTO_PATCH_CAP) -> tuple[int, int, int]:
    """Largest stride multiple that fits the smallest training volume per axis, at most ``cap``."""
    mins = np.min(shapes, axis=0)
    return tuple(int(max(stride, min(cap, (m // stride) * stride))) for m in mins)  # type: ignore[return-value]


def _with_common_spacing(preprocessing: Preprocessing, survey: Survey) -> Preprocessing:
    """Without SPACING or a plan, the network learns at the stored spacing: record it when the training
    cases share one, so inference on a CT of another resolution resamples to it instead of showing the
    network organs at a scale it never saw. Mixed spacings stay as stored (with a warning)."""
    spacings = survey.spacings
    if len(spacings) and np.allclose(spacings, spacings[0], rtol=1e-3, atol=1e-4):
        return Preprocessing(preprocessing.normalization, tuple(float(s) for s in spacings[0]), preprocessing.canonical)  # type: ignore[arg-type]
    if len(spacings):
        log.warning("training cases have different spacings and neither DATASET.SPACING nor DATASET.PLAN is set: "
                    "the network sees each case at its own spacing and inference runs at the input's spacing")
    return preprocessing
