"""From the DATASET section to prepared training/validation cases and the preprocessing spec."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Optional, Sequence

import numpy as np

from rtseg.config.schema import Config
from rtseg.data.cases import PreparedCase, prepare_cases
from rtseg.data.datasets import CaseRef, list_cases, load_case, load_partial_labels
from rtseg.data.normalization import Normalization, dataset_statistics
from rtseg.data.plan import Plan, make_plan, plan_in
from rtseg.data.preprocess import Preprocessing
from rtseg.errors import ConfigError

log = logging.getLogger("rtseg")


@dataclass
class TrainingData:
    train: list[PreparedCase]
    val: list[PreparedCase]
    preprocessing: Preprocessing
    patch_size: tuple[int, int, int]
    class_voxels: np.ndarray  # voxel count per class over the training set (for loss weights)


def split_refs(cfg: Config, split: str) -> list[CaseRef]:
    return list_cases(cfg.DATASET, split)


def build_preprocessing(cfg: Config, train_refs: list[CaseRef], plan: Optional[Plan] = None) -> Preprocessing:
    dataset_cfg = cfg.DATASET
    mode = dataset_cfg.NORMALIZE
    window = tuple(dataset_cfg.HU_WINDOW)
    mean = std = None
    if plan is not None:
        pn = plan.normalization
        if "NORMALIZE" not in dataset_cfg.model_fields_set:  # the config's explicit choice wins over the plan
            mode = pn.mode  # type: ignore[assignment]
        if mode == "zscore_dataset" and pn.mean is not None:
            mean, std = pn.mean, pn.std
            if "HU_WINDOW" not in dataset_cfg.model_fields_set and pn.window is not None:
                window = tuple(pn.window)
    if mode == "zscore_dataset" and mean is None:
        imgs, labs = [], []
        for ref in train_refs:
            img, lab = load_case(ref, dataset_cfg.N_CLASSES)
            imgs.append(img.array)
            labs.append(lab.array)
        mean, std, window = dataset_statistics(imgs, labs, window)  # type: ignore[arg-type]
    spacing = dataset_cfg.SPACING
    if spacing is None and plan is not None:
        spacing = plan.target_spacing
    return Preprocessing(Normalization(mode, window, mean, std), spacing)  # type: ignore[arg-type]


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


def auto_patch_size(cases: list[PreparedCase], stride: int, cap: int = 128) -> tuple[int, int, int]:
    """Largest stride multiple that fits the smallest training volume per axis, at most ``cap``."""
    mins = np.min([c.image.shape for c in cases], axis=0)
    return tuple(int(max(stride, min(cap, (m // stride) * stride))) for m in mins)  # type: ignore[return-value]


def plan_for(cfg: Config, stride: int) -> Plan:
    """Compute a plan from the training split with the config's model/memory settings."""
    dataset_cfg = cfg.DATASET
    return make_plan(split_refs(cfg, dataset_cfg.TRAIN_SPLIT), dataset_cfg.N_CLASSES, dataset_cfg.class_names(), stride=stride,
                     memory_budget_gib=cfg.TRAINING.MEMORY_BUDGET_GIB, base_filters=cfg.MODEL.BASE_FILTERS,
                     batch_size=cfg.TRAINING.BATCH_SIZE, bf16=cfg.CUDA and cfg.TRAINING.AMP)


def _record_common_spacing(spec: Preprocessing, train: list[PreparedCase]) -> Preprocessing:
    """Without SPACING or a plan, the network learns at the stored spacing: record it when the training
    cases share one, so inference on a CT of another resolution resamples to it instead of showing the
    network organs at a scale it never saw. Mixed spacings stay as stored (with a warning)."""
    spacings = np.array([c.spacing for c in train], dtype=np.float64)
    if len(spacings) and np.allclose(spacings, spacings[0], rtol=1e-3, atol=1e-4):
        return replace(spec, target_spacing=tuple(float(s) for s in spacings[0]))  # type: ignore[arg-type]
    if len(spacings):
        log.warning("training cases have different spacings and neither DATASET.SPACING nor DATASET.PLAN is set: "
                    "the network sees each case at its own spacing and inference runs at the input's spacing")
    return spec


def prepare_training_data(cfg: Config, stride: int, plan: Optional[Plan | dict[str, Any]] = None, need_val: bool = True,
                          fixed: Optional[tuple[Preprocessing, tuple[int, int, int]]] = None) -> TrainingData:
    """``fixed`` (preprocessing, patch) comes from a checkpoint when resuming, so nothing drifts.

    ``plan`` may also be the dict form a checkpoint holds (``checkpoint["plan"]``).
    """
    if isinstance(plan, dict):
        plan = plan_in(plan, "checkpoint plan")
    dataset_cfg = cfg.DATASET
    train_refs = split_refs(cfg, dataset_cfg.TRAIN_SPLIT)
    val_refs = split_refs(cfg, dataset_cfg.VAL_SPLIT) if need_val else []
    names = dataset_cfg.class_names()
    known = None
    if dataset_cfg.PARTIAL_LABELS:
        known = load_partial_labels(dataset_cfg.PARTIAL_LABELS, [r.case_id for r in train_refs + val_refs], names)
    spec = fixed[0] if fixed else build_preprocessing(cfg, train_refs, plan)
    train = prepare_cases(train_refs, spec, dataset_cfg.N_CLASSES, known, dataset_cfg.ABSENT_IS_UNKNOWN, desc="train cases")
    val = prepare_cases(val_refs, spec, dataset_cfg.N_CLASSES, known, dataset_cfg.ABSENT_IS_UNKNOWN, desc="val cases")
    if spec.target_spacing is None:
        spec = _record_common_spacing(spec, train)
    patch = fixed[1] if fixed else dataset_cfg.PATCH_SIZE
    if patch is None and plan is not None:
        patch = plan.patch_size
    if patch is None:
        patch = auto_patch_size(train, stride)
    check_patch_stride(patch, stride)
    counts = np.zeros(dataset_cfg.N_CLASSES, dtype=np.int64)
    for c in train:
        lab = c.label[c.label < dataset_cfg.N_CLASSES]
        counts += np.bincount(lab.ravel(), minlength=dataset_cfg.N_CLASSES)[: dataset_cfg.N_CLASSES]
    log.info(f"data: {len(train)} training and {len(val)} validation cases, patch {list(patch)}, spacing "
             f"{list(spec.target_spacing) if spec.target_spacing else 'as stored'}, normalization {spec.normalization.mode}")
    return TrainingData(train, val, spec, tuple(patch), counts)  # type: ignore[arg-type]
