"""Data-driven planning, nnU-Net style but as plain data: a JSON-able dict training and inference read.

The plan is a pure function of the training cases (deterministic), so it can
be recomputed, diffed and saved inside checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from rtseg.data.datasets import CaseRef, load_case
from rtseg.data.normalization import dataset_statistics
from rtseg.data.orientation import to_canonical
from rtseg.data.resample import target_shape
from rtseg.errors import DataError
from rtseg.io.jsonfile import read_json, write_json

PLAN_VERSION = 1
# Activation memory per voxel per base filter in a training step of the residual U-Nets
# (forward + backward, fp32), measured roughly; bf16 autocast halves it.
BYTES_PER_VOXEL_PER_FILTER = 60.0


def estimate_memory_gib(patch: Sequence[int], batch: int, base_filters: int, bf16: bool = False) -> float:
    vox = float(np.prod(patch)) * batch
    return vox * base_filters * BYTES_PER_VOXEL_PER_FILTER * (0.5 if bf16 else 1.0) / 2**30


def choose_patch(median_shape: Sequence[int], spacing: Sequence[float], stride: int, budget_gib: float, batch: int,
                 base_filters: int, bf16: bool, cap: int = 160) -> list[int]:
    """Start from the median (resampled) volume and shrink the physically largest axis until it fits."""
    patch = [int(min(cap, max(stride, int(np.ceil(s / stride)) * stride))) for s in median_shape]
    while estimate_memory_gib(patch, batch, base_filters, bf16) > budget_gib:
        extent = [p * sp for p, sp in zip(patch, spacing)]
        axis = int(np.argmax([e if p > stride else -1 for e, p in zip(extent, patch)]))
        if patch[axis] <= stride:
            break
        patch[axis] -= stride
    return patch


def make_plan(refs: Sequence[CaseRef], n_classes: int, class_names: Sequence[str], stride: int = 16,
              memory_budget_gib: float = 4.0, base_filters: int = 16, batch_size: int = 2, bf16: bool = True,
              window: tuple[float, float] = (-1024.0, 3071.0)) -> dict[str, Any]:
    if not refs:
        raise DataError("cannot plan: the training split has no cases")
    spacings, shapes, images, labels = [], [], [], []
    counts = np.zeros(n_classes, dtype=np.int64)
    for ref in tqdm(refs, desc="planning", unit="case", leave=False, disable=len(refs) < 4):
        img, lab = load_case(ref, n_classes)
        img, _ = to_canonical(img)
        lab, _ = to_canonical(lab)
        spacings.append(img.spacing)
        shapes.append(img.shape)
        images.append(img.array)
        labels.append(lab.array)
        valid = lab.array[lab.array < n_classes]
        counts += np.bincount(valid.ravel(), minlength=n_classes)[:n_classes]
    sp = np.array(spacings)
    target = np.median(sp, axis=0)
    # very anisotropic data: do not upsample the coarse axis to the median of a few fine cases
    coarse = int(np.argmax(target))
    if target[coarse] > 3 * np.min(target):
        target[coarse] = float(np.percentile(sp[:, coarse], 10))
    resampled = np.array([target_shape(tuple(s), tuple(p), tuple(target)) for s, p in zip(shapes, spacings)])
    median_shape = np.median(resampled, axis=0)
    patch = choose_patch(median_shape, target, stride, memory_budget_gib, batch_size, base_filters, bf16)
    mean, std, (lo, hi) = dataset_statistics(images, labels, window)
    freq = counts / max(1, counts.sum())
    return {
        "version": PLAN_VERSION,
        "n_cases": len(refs),
        "class_names": list(class_names),
        "target_spacing": [round(float(t), 4) for t in target],
        "median_shape": [int(s) for s in median_shape],
        "patch_size": patch,
        "batch_size": batch_size,
        "memory_budget_gib": memory_budget_gib,
        "estimated_memory_gib": round(estimate_memory_gib(patch, batch_size, base_filters, bf16), 3),
        "normalization": {"mode": "zscore_dataset", "mean": round(mean, 4), "std": round(std, 4), "window": [round(lo, 2), round(hi, 2)]},
        "class_frequencies": [float(f) for f in freq],
        "class_voxels": [int(c) for c in counts],
    }


def save_plan(plan: dict[str, Any], path: str | Path) -> Path:
    return write_json(plan, path)


def load_plan(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"DATASET.PLAN {p}: plan file not found (create it with: rtseg plan -c CFG --out {p})")
    plan = read_json(p, "DATASET.PLAN")
    for key in ("target_spacing", "patch_size", "normalization"):
        if key not in plan:
            raise DataError(f"{p}: not an rtseg plan (missing {key!r})")
    return plan
