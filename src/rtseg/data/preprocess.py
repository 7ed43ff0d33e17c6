"""Volume -> network grid (canonical orientation, target spacing, normalization) and back.

Everything needed to go back is recorded in ``GridInfo``; everything needed to
repeat the forward mapping at inference is ``Preprocessing`` (saved in checkpoints).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from rtseg.data.normalization import Normalization
from rtseg.data.orientation import Reorientation, to_canonical
from rtseg.data.resample import resize_array, target_shape
from rtseg.io.volume import Volume


@dataclass(frozen=True)
class Preprocessing:
    normalization: Normalization
    target_spacing: Optional[tuple[float, float, float]] = None
    canonical: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "normalization": self.normalization.to_dict(),
            "target_spacing": list(self.target_spacing) if self.target_spacing else None,
            "canonical": self.canonical,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        ts = d.get("target_spacing")
        return cls(Normalization.from_dict(d["normalization"]), tuple(ts) if ts else None, bool(d.get("canonical", True)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class GridInfo:
    """The input grid and how the network grid was derived from it."""

    reorientation: Optional[Reorientation]
    canonical_shape: tuple[int, int, int]
    network_shape: tuple[int, int, int]
    network_spacing: tuple[float, float, float]

    def restore(self, array: np.ndarray | torch.Tensor, is_label: bool) -> np.ndarray:
        """Map a network-grid array (D,H,W) or (C,D,H,W) back onto the input grid."""
        out = resize_array(array, self.canonical_shape, is_label)
        arr = out.numpy() if isinstance(out, torch.Tensor) else out
        if self.reorientation is not None:
            if arr.ndim == 4:
                arr = np.stack([self.reorientation.undo(a) for a in arr])
            else:
                arr = self.reorientation.undo(arr)
        return arr


def to_network_grid(volume: Volume, spec: Preprocessing, is_label: bool = False) -> tuple[np.ndarray, GridInfo]:
    """Reorient + resample (+ normalize images). Labels use nearest neighbour."""
    vol, tr = to_canonical(volume) if spec.canonical else (volume, None)
    spacing = vol.spacing
    shape = vol.shape
    if spec.target_spacing is not None:
        shape = target_shape(vol.shape, vol.spacing, spec.target_spacing)
        spacing = tuple(float(s) for s in spec.target_spacing)  # type: ignore[assignment]
    info = GridInfo(tr, vol.shape, shape, spacing)  # type: ignore[arg-type]
    if is_label:
        arr = resize_array(vol.array, shape, is_label=True).numpy().astype(np.uint8)
    else:
        arr = spec.normalization(vol.array)
        if shape != vol.shape:
            arr = resize_array(arr, shape, is_label=False).numpy()
    return np.ascontiguousarray(arr), info
