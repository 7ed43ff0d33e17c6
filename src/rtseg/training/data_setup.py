"""From the DATASET section to prepared training/validation cases, in one read of each training case.

The survey (``rtseg.data.survey``) reads every training case once; the plan, the grid
(``rtseg.data.grid``), the organ statistics and the prepared cases all come from that read.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from rtseg.config.schema import Config
from rtseg.data.cases import PreparedCase, prepare_case, prepare_cases
from rtseg.data.datasets import CaseRef, list_cases, load_partial_labels
from rtseg.data.grid import Grid, choose_preprocessing, complete_grid, needs_survey
from rtseg.data.plan import Plan, make_plan, plan_in
from rtseg.data.preprocess import Preprocessing
from rtseg.data.survey import CaseMeasure, Survey, survey_cases
from rtseg.errors import ConfigError
from rtseg.io.volume import Volume

log = logging.getLogger("rtseg")


@dataclass
class TrainingData:
    train: list[PreparedCase]
    val: list[PreparedCase]
    preprocessing: Preprocessing
    patch_size: tuple[int, int, int]
    class_voxels: np.ndarray  # voxel count per class over the training set on the network grid (for loss weights)
    survey: Survey
    plan: Optional[Plan] = None  # the plan used (``DATASET.PLAN: auto`` computes it from the survey)


def split_refs(cfg: Config, split: str) -> list[CaseRef]:
    return list_cases(cfg.DATASET, split)


def check_patch_stride(patch: Sequence[int], stride: int) -> None:
    if any(p % stride for p in patch):
        raise ConfigError(f"DATASET.PATCH_SIZE {list(patch)}: each size must be a multiple of the model's total stride {stride}")


def check_patch(patch: Sequence[int], stride: int, batch_size: int, model_name: str) -> None:
    """Reject training patches the network cannot take: not a stride multiple, or a one-value BatchNorm bottleneck."""
    check_patch_stride(patch, stride)
    if batch_size * int(np.prod([p // stride for p in patch])) < 2:
        raise ConfigError(f"DATASET.PATCH_SIZE {list(patch)} with TRAINING.BATCH_SIZE {batch_size}: the {model_name} "
                          f"bottleneck would hold one value per channel (BatchNorm needs more); use patches >= {2 * stride} "
                          "along one axis or a batch of 2")


def auto_plan(cfg: Config, survey: Survey, stride: int) -> Plan:
    """``DATASET.PLAN: auto``: the plan of the surveyed split with the config's model and memory settings."""
    return make_plan(survey, cfg.DATASET.class_names(), stride=stride, memory_budget_gib=cfg.TRAINING.MEMORY_BUDGET_GIB,
                     base_filters=cfg.MODEL.BASE_FILTERS, batch_size=cfg.TRAINING.BATCH_SIZE,
                     bf16=cfg.CUDA and cfg.TRAINING.AMP)


def plan_for(cfg: Config, stride: int) -> Plan:
    """A plan from the training split (``rtseg plan``): a survey without preparing anything."""
    dataset_cfg = cfg.DATASET
    return auto_plan(cfg, survey_cases(split_refs(cfg, dataset_cfg.TRAIN_SPLIT), dataset_cfg.N_CLASSES), stride)


def known_classes(cfg: Config, refs: Sequence[CaseRef]) -> Optional[dict[str, list[int]]]:
    """``DATASET.PARTIAL_LABELS`` read for ``refs`` (None without the key)."""
    d = cfg.DATASET
    return load_partial_labels(d.PARTIAL_LABELS, [r.case_id for r in refs], d.class_names()) if d.PARTIAL_LABELS else None


def prepare_training_data(cfg: Config, stride: int, plan: Optional[Plan | dict[str, Any]] = None, need_val: bool = True,
                          fixed: Optional[tuple[Preprocessing, tuple[int, int, int]]] = None,
                          measure: Optional[Callable[[Optional[dict[str, list[int]]]], CaseMeasure]] = None) -> TrainingData:
    """Survey and prepare the training split in one read per case, then the validation split.

    ``fixed`` (preprocessing, patch) comes from a checkpoint when resuming, so nothing drifts; ``plan`` may
    also be the dict form a checkpoint holds. ``measure(known classes)`` makes a per-case measurement for the survey.
    """
    if isinstance(plan, dict):
        plan = plan_in(plan, "checkpoint plan")
    d = cfg.DATASET
    train_refs = split_refs(cfg, d.TRAIN_SPLIT)
    val_refs = split_refs(cfg, d.VAL_SPLIT) if need_val else []
    known = known_classes(cfg, train_refs + val_refs)
    preprocessing = fixed[0] if fixed else (None if needs_survey(d, plan) else choose_preprocessing(d, plan, None))
    rng = np.random.default_rng(0)
    train: list[PreparedCase] = []
    held: list[tuple[CaseRef, Volume, Volume]] = []

    def take(ref: CaseRef, image: Volume, label: Volume) -> None:
        if preprocessing is None:
            held.append((ref, image, label))  # the grid waits for the whole survey
        else:
            train.append(prepare_case(ref, image, label, preprocessing, d.N_CLASSES, rng, known, d.ABSENT_IS_UNKNOWN))

    survey = survey_cases(train_refs, d.N_CLASSES, measure(known) if measure else None, take)
    if preprocessing is None:
        if plan is None and d.PLAN == "auto":
            plan = auto_plan(cfg, survey, stride)
        preprocessing = choose_preprocessing(d, plan, survey)
        while held:
            train.append(prepare_case(*held.pop(0), preprocessing, d.N_CLASSES, rng, known, d.ABSENT_IS_UNKNOWN))
    val = prepare_cases(val_refs, preprocessing, d.N_CLASSES, known, d.ABSENT_IS_UNKNOWN, desc="val cases")
    grid = Grid(*fixed) if fixed else complete_grid(d, plan, preprocessing, survey, stride)
    check_patch_stride(grid.patch_size, stride)
    counts = np.zeros(d.N_CLASSES, dtype=np.int64)
    for c in train:
        lab = c.label[c.label < d.N_CLASSES]
        counts += np.bincount(lab.ravel(), minlength=d.N_CLASSES)[: d.N_CLASSES]
    spacing = grid.preprocessing.target_spacing
    log.info(f"data: {len(train)} training and {len(val)} validation cases, patch {list(grid.patch_size)}, spacing "
             f"{list(spacing) if spacing else 'as stored'}, normalization {grid.preprocessing.normalization.mode}")
    return TrainingData(train, val, grid.preprocessing, grid.patch_size, counts, survey, plan)
