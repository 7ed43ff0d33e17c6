"""Intensity normalization: the original code base's (none, L2) plus what CT needs (HU window, z-score)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np


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
