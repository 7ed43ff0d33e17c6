"""Data-driven planning, nnU-Net style but as plain data: a typed ``Plan`` with a JSON form.

The plan is a pure function of the training cases (deterministic), so it can
be recomputed, diffed and saved inside checkpoints. ``Plan.to_dict`` is the JSON
file format (unchanged since version 1); ``Plan.from_dict`` reads plan.json files and the
plans inside checkpoints, also hand-edited ones that carry only the keys training reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from rtseg.data.resample import target_shape
from rtseg.data.survey import Survey
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


REQUIRED_KEYS = ("target_spacing", "patch_size", "normalization")
# Keys after the required ones, in the order plan.json has always written them; absent ones stay absent.
_OPTIONAL_KEYS = ("version", "n_cases", "class_names", "median_shape", "batch_size", "memory_budget_gib",
                  "estimated_memory_gib", "class_frequencies", "class_voxels")
_KEY_ORDER = ("version", "n_cases", "class_names", "target_spacing", "median_shape", "patch_size", "batch_size",
              "memory_budget_gib", "estimated_memory_gib", "normalization", "class_frequencies", "class_voxels")


@dataclass(frozen=True)
class PlanNormalization:
    """The CT normalization a plan proposes; ``mean``/``std`` set only for zscore_dataset."""

    mode: str
    mean: Optional[float] = None
    std: Optional[float] = None
    window: Optional[tuple[float, float]] = None

    def to_dict(self) -> dict[str, Any]:
        out = {"mode": self.mode, "mean": self.mean, "std": self.std, "window": list(self.window) if self.window else None}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PlanNormalization":
        window = data.get("window")
        return cls(str(data["mode"]), _opt_float(data.get("mean")), _opt_float(data.get("std")),
                   (float(window[0]), float(window[1])) if window is not None else None)


def _opt_float(v: Any) -> Optional[float]:
    return None if v is None else float(v)


@dataclass(frozen=True)
class Plan:
    """Spacing, patch size and normalization for training (the rest documents how they were chosen)."""

    target_spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    normalization: PlanNormalization
    version: Optional[int] = PLAN_VERSION
    n_cases: Optional[int] = None
    class_names: Optional[list[str]] = None
    median_shape: Optional[list[int]] = None
    batch_size: Optional[int] = None
    memory_budget_gib: Optional[float] = None
    estimated_memory_gib: Optional[float] = None
    class_frequencies: Optional[list[float]] = None
    class_voxels: Optional[list[int]] = None
    extras: dict[str, Any] = field(default_factory=dict)  # keys of newer or hand-edited plans, kept as they are

    def to_dict(self) -> dict[str, Any]:
        """The plan.json form (lists, not tuples, so it equals its JSON round trip)."""
        values = {"target_spacing": list(self.target_spacing), "patch_size": list(self.patch_size),
                  "normalization": self.normalization.to_dict(), **{k: getattr(self, k) for k in _OPTIONAL_KEYS}}
        out = {k: values[k] for k in _KEY_ORDER if values[k] is not None}
        return {**out, **self.extras}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "plan") -> "Plan":
        if not isinstance(data, dict):
            raise DataError(f"{source}: not an rtseg plan (expected a JSON object, found {type(data).__name__})")
        for key in REQUIRED_KEYS:
            if key not in data:
                raise DataError(f"{source}: not an rtseg plan (missing {key!r})")
        try:
            return cls(
                target_spacing=tuple(float(v) for v in data["target_spacing"]),  # type: ignore[arg-type]
                patch_size=tuple(int(v) for v in data["patch_size"]),  # type: ignore[arg-type]
                normalization=PlanNormalization.from_dict(data["normalization"]),
                **{k: data.get(k) for k in _OPTIONAL_KEYS},
                extras={k: v for k, v in data.items() if k not in _KEY_ORDER},
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(f"{source}: malformed plan ({type(exc).__name__}: {exc})") from None


def make_plan(survey: Survey, class_names: Sequence[str], stride: int = 16, memory_budget_gib: float = 4.0,
              base_filters: int = 16, batch_size: int = 2, bf16: bool = True,
              window: tuple[float, float] = (-1024.0, 3071.0)) -> Plan:
    """The plan of the surveyed training split (``rtseg.data.survey``): a pure function of the data."""
    if not survey.cases:
        raise DataError("cannot plan: the training split has no cases")
    sp = survey.spacings
    target = np.median(sp, axis=0)
    # very anisotropic data: do not upsample the coarse axis to the median of a few fine cases
    coarse = int(np.argmax(target))
    if target[coarse] > 3 * np.min(target):
        target[coarse] = float(np.percentile(sp[:, coarse], 10))
    resampled = np.array([target_shape(tuple(s), tuple(p), tuple(target)) for s, p in zip(survey.shapes, sp)])
    median_shape = np.median(resampled, axis=0)
    patch = choose_patch(median_shape, target, stride, memory_budget_gib, batch_size, base_filters, bf16)
    mean, std, (lo, hi) = survey.intensity_statistics(window)
    counts = survey.class_voxels()
    freq = counts / max(1, counts.sum())
    return Plan(
        version=PLAN_VERSION,
        n_cases=len(survey.cases),
        class_names=list(class_names),
        target_spacing=tuple(round(float(t), 4) for t in target),  # type: ignore[arg-type]
        median_shape=[int(s) for s in median_shape],
        patch_size=tuple(patch),  # type: ignore[arg-type]
        batch_size=batch_size,
        memory_budget_gib=memory_budget_gib,
        estimated_memory_gib=round(estimate_memory_gib(patch, batch_size, base_filters, bf16), 3),
        normalization=PlanNormalization("zscore_dataset", round(float(mean), 4), round(float(std), 4),
                                        (round(float(lo), 2), round(float(hi), 2))),
        class_frequencies=[float(f) for f in freq],
        class_voxels=[int(c) for c in counts],
    )


def save_plan(plan: Plan, path: str | Path) -> Path:
    return write_json(plan.to_dict(), path)


def load_plan(path: str | Path) -> Plan:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"DATASET.PLAN {p}: plan file not found (create it with: rtseg plan -c CFG --out {p})")
    return Plan.from_dict(read_json(p, "DATASET.PLAN"), str(p))


def plan_in(data: Optional[dict[str, Any]], source: str) -> Optional[Plan]:
    """The training plan a checkpoint's plan dict holds, None when it holds none of a plan's keys (a run
    without DATASET.PLAN stores only the organ statistics there); a partial plan is an error."""
    if not data or not any(k in data for k in REQUIRED_KEYS):
        return None
    return Plan.from_dict(data, source)
