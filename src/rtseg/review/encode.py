"""Compact, exact-to-the-stated-error encodings of CT and label volumes for the self-contained review page.

A 512x512x160 CT holds 42 million voxels of noisy HU (about 6 bits of noise each), so no
lossless code fits a page of a few MB. The page therefore stores:

- the CT on a *display grid*: in-plane block means of ``f`` x ``f`` voxels, with the smallest
  ``f`` whose encoding fits the byte budget (``f = 1`` keeps full resolution);
- HU quantised piecewise (:data:`HU_STEPS`): 3 HU steps in soft tissue, coarser in air, lung and
  dense bone, always finer than one grey level of the preset that shows that range, so every
  window preset and any window/level a user types work on real HU;
- labels at full resolution, losslessly: contours are exact.

Both are delta-coded (previous voxel in x-fastest order), zigzag-mapped to unsigned integers,
split into low and high byte planes and deflated (zlib); the browser inflates them with its
built-in ``DecompressionStream``: no library, no network.
"""
from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np

from rtseg.errors import DataError

#: (upper HU bound, step HU) of each quantisation segment, from the data's minimum upwards.
HU_STEPS: tuple[tuple[float, int], ...] = ((-900.0, 20), (-200.0, 8), (300.0, 3), (1500.0, 8), (float("inf"), 20))
ZLIB_LEVEL = 6


def _segments(lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(start HU, step, number of codes) of each segment overlapping [lo, hi]."""
    segs, start = [], lo
    for bound, step in HU_STEPS:
        stop = min(hi + 1, int(np.ceil(bound)) if np.isfinite(bound) else hi + 1)
        if stop > start:
            segs.append((start, step, int(np.ceil((stop - start) / step))))
            start = stop
    return segs


def quantise_hu(hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes (uint16) and the lookup table code -> HU (int16); ``|lut[code] - hu| <= step / 2``."""
    v = np.rint(np.asarray(hu, dtype=np.float32)).astype(np.int32)
    lo, hi = int(v.min()), int(v.max())
    if lo < -32768 or hi > 32767:
        raise DataError(f"CT values {lo}..{hi} do not fit 16-bit integers (HU expected)")
    codes = np.zeros(v.shape, dtype=np.int32)
    lut: list[np.ndarray] = []
    offset = 0
    for start, step, n in _segments(lo, hi):
        inside = (v >= start) & (v < start + n * step)
        codes[inside] = offset + (v[inside] - start) // step
        lut.append(start + np.arange(n) * step + (step - 1) // 2)
        offset += n
    table = np.clip(np.concatenate(lut), lo, hi).astype(np.int16)
    return codes.astype(np.uint16), table


def pack_deltas(values: np.ndarray) -> bytes:
    """x-fastest stream -> deltas -> zigzag -> low/high byte planes -> zlib (see module docstring)."""
    flat = np.asarray(values).transpose(2, 1, 0).ravel().astype(np.int32)
    d = np.diff(flat, prepend=np.int32(0))
    z = ((d << 1) ^ (d >> 31)).astype(np.uint32)
    if int(z.max(initial=0)) > 0xFFFF:
        raise DataError("values differ by more than 32767 between neighbours; cannot encode")
    planes = np.concatenate([(z & 0xFF).astype(np.uint8), (z >> 8).astype(np.uint8)])
    return zlib.compress(planes.tobytes(), ZLIB_LEVEL)


def unpack_deltas(blob: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`pack_deltas` (the browser does the same in review.js)."""
    planes = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
    n = int(np.prod(shape))
    z = planes[:n].astype(np.int64) | (planes[n:].astype(np.int64) << 8)
    d = (z >> 1) ^ -(z & 1)
    return np.cumsum(d).reshape(shape[::-1]).transpose(2, 1, 0)


def block_mean(ct: np.ndarray, factor: int) -> np.ndarray:
    """In-plane (axes 0, 1) means of ``factor`` x ``factor`` blocks; edge blocks average what they hold."""
    if factor == 1:
        return np.asarray(ct, dtype=np.float32)
    nx, ny, nz = ct.shape
    px, py = -nx % factor, -ny % factor
    a = np.pad(np.asarray(ct, dtype=np.float32), ((0, px), (0, py), (0, 0)), mode="edge")
    return a.reshape(a.shape[0] // factor, factor, a.shape[1] // factor, factor, nz).mean(axis=(1, 3))


def encode_ct(ct: np.ndarray, budget_bytes: int) -> dict[str, Any]:
    """The page's CT record: the smallest in-plane factor whose encoding fits ``budget_bytes`` (base64 counted)."""
    # start near the answer: noisy CT costs about half a byte per voxel after coding
    factor = max(1, int(np.sqrt(np.asarray(ct).size * 0.5 / max(budget_bytes, 1))))
    while True:
        codes, lut = quantise_hu(block_mean(ct, factor))
        blob = pack_deltas(codes)
        size = 4 * ((len(blob) + 2) // 3)
        if size <= budget_bytes or min(codes.shape[:2]) <= 32:
            break
        # noise-dominated data shrink about with the voxel count: jump close to the fitting factor
        factor = max(factor + 1, int(np.floor(factor * np.sqrt(size / budget_bytes))))
    return {"shape": list(codes.shape), "factor": factor, "lut": lut.tolist(),
            "data": base64.b64encode(blob).decode("ascii"), "bytes": size}


def encode_labels(labels: np.ndarray) -> dict[str, Any]:
    lab = np.asarray(labels)
    if lab.max(initial=0) > 255 or lab.min(initial=0) < 0:
        raise DataError(f"labels must be 0..255 for the review page, found {int(lab.min())}..{int(lab.max())}")
    blob = pack_deltas(lab.astype(np.uint8))
    return {"shape": list(lab.shape), "data": base64.b64encode(blob).decode("ascii")}
