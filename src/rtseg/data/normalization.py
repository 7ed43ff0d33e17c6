"""Intensity normalization: the seed's (none, L2) plus what CT needs (HU window, z-score)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from rtseg.errors import DataError

MODES = ("none", "l2", "ct_window", "zscore", "zscore_dataset")


@dataclass(frozen=True)
class Normalization:
    """Everything inference needs to reproduce training's intensity mapping (saved in checkpoints)."""

    mode: str = "none"
    window: tuple[float, float] = (-1000.0, 1000.0)
    mean: Optional[float] = None  # dataset statistics for zscore_dataset
    std: Optional[float] = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"normalization mode {self.mode!r} not in {MODES}")
        if self.mode == "zscore_dataset" and (self.mean is None or not self.std):
            raise ValueError("zscore_dataset needs dataset mean and std")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["window"] = list(self.window)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalization":
        d = dict(d)
        d["window"] = tuple(d.get("window", (-1000.0, 1000.0)))
        return cls(**d)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        x = array.astype(np.float32, copy=True)
        if self.mode == "none":
            return x
        if self.mode == "l2":
            n = float(np.linalg.norm(x))
            return x / n if n > 0 else x
        if self.mode == "ct_window":
            lo, hi = self.window
            np.clip(x, lo, hi, out=x)
            x -= (lo + hi) / 2.0
            x /= (hi - lo) / 2.0
            return x
        if self.mode == "zscore":
            m, s = float(x.mean()), float(x.std())
            return (x - m) / (s if s > 0 else 1.0)
        lo, hi = self.window
        np.clip(x, lo, hi, out=x)
        return (x - float(self.mean)) / float(self.std)  # type: ignore[arg-type]


def dataset_statistics(images: list[np.ndarray], labels: list[np.ndarray], window: tuple[float, float]) -> tuple[float, float, tuple[float, float]]:
    """nnU-Net-style CT statistics from foreground voxels: mean, std and the 0.5/99.5 percentiles."""
    samples = []
    rng = np.random.default_rng(0)
    for img, lab in zip(images, labels):
        fg = img[(lab > 0) & (lab != 250)]
        if fg.size == 0:
            continue
        if fg.size > 100_000:
            fg = rng.choice(fg, 100_000, replace=False)
        samples.append(fg.astype(np.float64))
    if not samples:
        raise DataError("cannot compute dataset intensity statistics: no foreground voxels in the training labels")
    v = np.concatenate(samples)
    p_lo, p_hi = np.percentile(v, [0.5, 99.5])
    lo, hi = max(window[0], float(p_lo)), min(window[1], float(p_hi))
    if lo >= hi:
        lo, hi = float(p_lo), float(p_hi) + 1e-3
    v = np.clip(v, lo, hi)
    return float(v.mean()), float(v.std() or 1.0), (lo, hi)
