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
split into low and high byte planes (the low one alone where it suffices) and deflated (zlib); the browser inflates them with its
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


def pack_deltas(values: np.ndarray) -> tuple[bytes, int]:
    """x-fastest stream -> deltas -> zigzag -> byte planes -> zlib, and the number of planes (1 or 2).

    Values must lie in 0..32767 (codes, labels), so every delta fits 16 bits; where all zigzag
    deltas fit one byte (labels) only the low plane is stored.
    """
    v = np.asarray(values)
    if v.size and (int(v.min()) < 0 or int(v.max()) > 32767):
        raise DataError(f"values {int(v.min())}..{int(v.max())} outside 0..32767; cannot encode")
    flat = v.transpose(2, 1, 0).ravel().astype(np.int16)
    d = np.diff(flat, prepend=np.int16(0))
    z = ((d << 1) ^ (d >> 15)).view(np.uint16)
    if int(z.max(initial=0)) < 256:
        return zlib.compress(z.astype(np.uint8).tobytes(), ZLIB_LEVEL), 1
    planes = z.astype("<u2").view(np.uint8).reshape(-1, 2)
    return zlib.compress(planes[:, 0].tobytes() + planes[:, 1].tobytes(), ZLIB_LEVEL), 2


def unpack_deltas(blob: bytes, shape: tuple[int, int, int], n_planes: int) -> np.ndarray:
    """Inverse of :func:`pack_deltas` (the browser does the same in review.js)."""
    planes = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
    n = int(np.prod(shape))
    z = planes[:n].astype(np.int64)
    if n_planes == 2:
        z |= planes[n:].astype(np.int64) << 8
    d = (z >> 1) ^ -(z & 1)
    return np.cumsum(d).reshape(shape[::-1]).transpose(2, 1, 0)


#: In-plane display factors tried, finest first (the display grid is floor((n - 1) / factor) + 1 pixels).
FACTORS: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0)


def bin_starts(n: int, factor: float) -> np.ndarray:
    """First full-resolution index of each display bin: bin ``I`` holds indices ``i`` with ``floor(i / factor) == I``."""
    n_out = int(np.floor((n - 1) / factor + 1e-9)) + 1
    return np.ceil(np.arange(n_out) * factor - 1e-9).astype(np.intp)


def block_mean(ct: np.ndarray, factor: float) -> np.ndarray:
    """In-plane (axes 0, 1) means over the display bins of :func:`bin_starts`; ``factor`` 1 is the identity."""
    a = np.asarray(ct, dtype=np.float32)
    if factor == 1:
        return a
    for axis in (0, 1):
        starts = bin_starts(a.shape[axis], factor)
        counts = np.diff(np.append(starts, a.shape[axis])).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = len(starts)
        a = np.add.reduceat(a, starts, axis=axis) / counts.reshape(shape)
    return a


def encode_ct(ct: np.ndarray, budget_bytes: int) -> dict[str, Any]:
    """The page's CT record: the finest in-plane factor whose encoding fits ``budget_bytes`` (base64 counted)."""
    # noisy CT costs about half a byte per voxel after coding: start at the factor that estimate allows
    guess = np.sqrt(np.asarray(ct).size * 0.5 / max(budget_bytes, 1))
    i = max(0, int(np.searchsorted(FACTORS, guess, side="right")) - 1)
    while True:
        factor = FACTORS[i]
        codes, lut = quantise_hu(block_mean(ct, factor))
        blob, n_planes = pack_deltas(codes)
        size = 4 * ((len(blob) + 2) // 3)
        if size <= budget_bytes or i == len(FACTORS) - 1:
            break
        # size falls about as 1 / factor**2: skip the factors that cannot fit
        need = factor * np.sqrt(size / budget_bytes) * 0.95
        i = max(i + 1, min(len(FACTORS) - 1, int(np.searchsorted(FACTORS, need))))
    return {"shape": list(codes.shape), "factor": factor, "lut": lut.tolist(), "planes": n_planes,
            "data": base64.b64encode(blob).decode("ascii"), "bytes": size}


def encode_labels(labels: np.ndarray) -> dict[str, Any]:
    lab = np.asarray(labels)
    if lab.max(initial=0) > 255 or lab.min(initial=0) < 0:
        raise DataError(f"labels must be 0..255 for the review page, found {int(lab.min())}..{int(lab.max())}")
    blob, n_planes = pack_deltas(lab.astype(np.uint8))
    return {"shape": list(lab.shape), "planes": n_planes, "data": base64.b64encode(blob).decode("ascii")}
