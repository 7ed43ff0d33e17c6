"""Checks a volume passes where it enters rtseg (NIfTI, legacy_npy .npy, DICOM readers).

A NaN voxel, an unknown geometry or a header that claims more voxels than fit
in memory would otherwise surface later as a silently wrong contour or an
out-of-memory kill; here they become one clear ``DataError`` naming the file
and the offending field or voxel, before anything is allocated where possible.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Literal, Sequence, Union

import numpy as np

from rtseg.errors import DataError

log = logging.getLogger(__name__)

NonFinitePolicy = Union[Literal["error"], float]
"""``"error"`` refuses a volume with NaN/inf voxels; a float replaces them by that value with a warning."""

MAX_BYTES_ENV = "RTSEG_MAX_VOLUME_BYTES"
DEFAULT_MAX_BYTES = 16 * 2**30
"""One volume's array may take at most this much memory (a 1024x1024x2000 float64 CT is 16 GiB)."""


def exc_summary(exc: BaseException) -> str:
    """``Type: message`` on one line, short: library errors can span lines (nibabel's do)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def max_volume_bytes() -> int:
    """The limit for one volume: ``$RTSEG_MAX_VOLUME_BYTES`` if set, else 16 GiB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(float(raw))
    except ValueError:
        raise DataError(f"{MAX_BYTES_ENV}={raw!r}: expected a number of bytes, e.g. 34359738368 for 32 GiB") from None
    if value <= 0:
        raise DataError(f"{MAX_BYTES_ENV}={raw!r}: expected a positive number of bytes")
    return value


def check_size(source: object, shape: Sequence[int], itemsize: int, field: str) -> int:
    """Refuse a header whose array would not fit the memory limit; returns the size in bytes.

    ``field`` names where the shape came from (e.g. ``dim[1:4]``) so the user can find it.
    """
    dims = [int(s) for s in shape]
    if any(d < 1 for d in dims):
        raise DataError(f"{source}: {field} = {tuple(dims)}: every dimension must be at least 1")
    nbytes = math.prod(dims) * int(itemsize)  # Python ints: no overflow for absurd headers
    limit = max_volume_bytes()
    if nbytes > limit:
        raise DataError(
            f"{source}: {field} = {tuple(dims)} of {itemsize}-byte voxels is {nbytes / 2**30:.3g} GiB, "
            f"over the {limit / 2**30:.3g} GiB limit for one volume (set {MAX_BYTES_ENV} to raise it)"
        )
    return nbytes


def check_numeric(source: object, dtype: np.dtype) -> None:
    """Voxels must be plain integers, floats or booleans (no complex, RGB, text or objects)."""
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{source}: voxel type {dtype} is not a grey-level number (expected integer or float)")


def check_finite(source: object, array: np.ndarray, nonfinite: NonFinitePolicy = "error") -> np.ndarray:
    """``array`` unchanged when every voxel is finite; else an error naming the count and the first bad voxel
    (C order), or, when ``nonfinite`` is a number, a copy with them replaced and a warning that says so."""
    if array.dtype.kind not in "fc":
        return array
    bad = ~np.isfinite(array)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return array
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    where = f"{n_bad} of {array.size} voxels are NaN or infinite (first at voxel {first}: {array[first]})"
    if isinstance(nonfinite, str):
        if nonfinite != "error":
            raise ValueError(f"nonfinite must be 'error' or a number, got {nonfinite!r}")
        raise DataError(f"{source}: {where}; expected finite values")
    value = float(nonfinite)
    if not math.isfinite(value):
        raise ValueError(f"nonfinite replacement must be a finite number, got {value}")
    log.warning("%s: %s; replaced by %g as asked", source, where, value)
    return np.where(bad, np.asarray(value, dtype=array.dtype), array)


def check_spacing(source: object, spacing: Sequence[float], field: str) -> None:
    """Voxel sizes must be positive and finite: zero or NaN spacing means the geometry is unknown."""
    values = [float(s) for s in spacing]
    if not all(math.isfinite(v) and v > 0 for v in values):
        shown = ", ".join(f"{v:g}" for v in values)
        raise DataError(f"{source}: {field} = ({shown}): voxel spacing must be positive and finite (mm)")


def check_affine(source: object, affine: np.ndarray, field: str) -> None:
    """A voxel-to-world matrix must be finite with independent, non-zero axes."""
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise DataError(f"{source}: {field} holds non-finite numbers; the voxel-to-patient geometry is unknown")
    lin = aff[:3, :3]
    norms = np.linalg.norm(lin, axis=0)
    check_spacing(source, norms.tolist(), f"voxel sizes from the {field}")
    cosines = lin / norms
    if abs(np.linalg.det(cosines)) < 1e-3:
        raise DataError(f"{source}: {field} axes are (nearly) parallel; the voxel-to-patient geometry is degenerate")
