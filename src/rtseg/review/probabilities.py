"""Probabilities as stored for ``--save-probabilities``: uint8 scaled by 1/255, uint16 by 1/65535, or float16.

uint8 keeps a case's six-class probability maps at 1 byte per voxel and class (NIfTI
``scl_slope = 1/255``); each value is off by at most 1/510, so a voxel's stored classes sum to 1
within n_classes/510, and the argmax is kept wherever the two largest classes differ by more
than 1/255. uint16 (``scl_slope = 1/65535``) is off by at most 1/131070. float16 is off by at
most 2**-11 relative, but NIfTI-1 has no float16 type, so ``rtseg predict`` offers uint8 and uint16.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from rtseg.errors import DataError

StoredDtype = Literal["uint8", "uint16", "float16"]
_SCALED = {"uint8": (np.uint8, 255.0), "uint16": (np.uint16, 65535.0)}


def store_probabilities(prob: np.ndarray, dtype: StoredDtype = "uint8") -> tuple[np.ndarray, float]:
    """The array to write and its scale factor (value = stored * slope)."""
    p = np.asarray(prob, dtype=np.float32)
    if dtype in _SCALED:
        kind, top = _SCALED[dtype]
        return np.rint(np.clip(p, 0.0, 1.0) * top).astype(kind), 1.0 / top
    if dtype == "float16":
        return p.astype(np.float16), 1.0
    raise DataError(f"probability storage type must be uint8, uint16 or float16, got {dtype!r}")


def load_probabilities(stored: np.ndarray, slope: float) -> np.ndarray:
    """float32 probabilities from a stored array (the inverse of :func:`store_probabilities`)."""
    return np.asarray(stored, dtype=np.float32) * np.float32(slope)
