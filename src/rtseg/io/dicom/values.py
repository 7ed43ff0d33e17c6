"""Checked access to DICOM header values used for geometry and Hounsfield units.

pydicom parses values lazily and keeps what a file says, malformed or not (a
wrong VR, ``NaN`` in a DS, a zero pixel spacing). Every value rtseg builds a
volume from goes through here, so a bad one is a ``DataError`` naming the file
and the tag instead of a ``ValueError`` deep in numpy or a silently wrong grid.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from rtseg.errors import DataError


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _get(ds: Dataset, keyword: str, path: Path) -> Any:
    try:
        return ds.get(keyword)
    except Exception as exc:  # pydicom converts on access: a malformed value raises here
        raise DataError(f"{path}: {keyword} cannot be parsed ({type(exc).__name__})") from None


def parse_all(ds: Dataset, path: Path, keywords: tuple[str, ...]) -> None:
    """Convert these values now (pydicom caches them), so later plain ``ds.get`` calls cannot raise."""
    for keyword in keywords:
        _get(ds, keyword, path)


def float_list(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    """``n`` finite numbers (ImagePositionPatient, ImageOrientationPatient, PixelSpacing)."""
    value = _get(ds, keyword, path)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except Exception:
        arr = np.empty(0)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DataError(f"{path}: {keyword} missing or malformed: {_shown(value)} (expected {n} finite numbers)")
    return arr


def number(ds: Dataset, keyword: str, path: Path, default: float | None = None) -> float:
    """One finite number; ``default`` when the tag is absent or empty (None: required)."""
    value = _get(ds, keyword, path)
    if value is None or value == "":
        if default is None:
            raise DataError(f"{path}: {keyword} missing (expected a number)")
        return default
    try:
        out = float(value)
    except Exception:
        out = math.nan
    if not math.isfinite(out):
        raise DataError(f"{path}: {keyword} = {_shown(value)}: expected a finite number")
    return out


def count(ds: Dataset, keyword: str, path: Path, default: int | None = None) -> int:
    """A positive whole number (Rows, Columns, NumberOfFrames)."""
    value = number(ds, keyword, path, None if default is None else float(default))
    if value < 1 or not value.is_integer():
        raise DataError(f"{path}: {keyword} = {_shown(_get(ds, keyword, path))}: expected a whole number >= 1")
    return int(value)


def rescale(ds: Dataset, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) mapping stored values to HU; a zero slope would erase the image."""
    slope = number(ds, "RescaleSlope", path, 1.0)
    intercept = number(ds, "RescaleIntercept", path, 0.0)
    if slope == 0:
        raise DataError(f"{path}: RescaleSlope = 0 maps every pixel to {intercept:g} HU; expected a non-zero slope")
    return slope, intercept


def single_slice_spacing(ds: Dataset, path: Path) -> float:
    """Slice spacing of a one-slice series, which has no second position to take it from."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = number(ds, keyword, path, 0.0)
        if value > 0:
            return value
    raise DataError(
        f"{path}: a single-slice series needs SpacingBetweenSlices or SliceThickness > 0 for its slice spacing; "
        "neither is there"
    )
