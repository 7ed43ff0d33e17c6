"""Polygons of one slice -> voxel mask, the way RTSTRUCT contours are meant.

Rule (documented in docs/CLINICAL_IO.md): a voxel is in the structure when its
centre is inside an odd number of the slice's polygons (nested contours are
XOR-ed, so a hole drawn as an inner contour is a hole), or when its centre lies
on a polygon line (within ``ON_LINE`` voxels). The second part makes files
whose contours run through the centres of the boundary voxels (rt-utils,
OpenCV-traced, many TPS exports) and keyhole cuts that pass through voxel
centres (plastimatch) come back without losing their edge voxels; rtseg's own
contours pass no centre, so for them only the first part matters. A
contour of one or two points (rt-utils writes such for one-voxel-wide tips)
thus marks the voxels it touches.

One scanline pass per slice, vectorised over all edges of all polygons.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

ON_LINE = 0.02  # voxels: a centre this close to a polygon edge is on it (DS rounding of other writers)


def _edges(polys: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    a = np.concatenate([p for p in polys if len(p)])
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polys if len(p)])
    return a, b


def _interior(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centres strictly inside an odd number of polygons (even-odd over all edges together)."""
    nx, ny = shape
    lo, hi = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
    first = np.maximum(np.ceil(lo), 0).astype(np.int64)  # rows i with lo <= i < hi (half-open: vertices count once)
    last = np.minimum(np.ceil(hi) - 1, nx - 1).astype(np.int64)
    n = np.maximum(last - first + 1, 0)
    mask = np.zeros(shape, dtype=bool)
    if n.sum() == 0:
        return mask
    e = np.repeat(np.arange(len(a)), n)
    rows = first[e] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    t = (rows - a[e, 0]) / (b[e, 0] - a[e, 0])
    cols = a[e, 1] + t * (b[e, 1] - a[e, 1])
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    # crossings per row come in pairs: inside between the 1st and 2nd, 3rd and 4th, ...
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    left, right = rank % 2 == 0, rank % 2 == 1
    r, c0, c1 = rows[left], cols[left], cols[right]
    j0 = np.clip(np.floor(c0 + ON_LINE).astype(np.int64) + 1, 0, ny)
    j1 = np.clip(np.ceil(c1 - ON_LINE).astype(np.int64), 0, ny)  # exclusive
    ok = j1 > j0
    diff = np.zeros((nx, ny + 1), dtype=np.int32)
    np.add.at(diff, (r[ok], j0[ok]), 1)
    np.add.at(diff, (r[ok], j1[ok]), -1)
    return np.cumsum(diff[:, :ny], axis=1) > 0


def _on_lines(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centres within ``ON_LINE`` of an edge, found by stepping each edge along its longer axis."""
    nx, ny = shape
    d = b - a
    major = (np.abs(d[:, 1]) > np.abs(d[:, 0])).astype(np.int64)  # 0: step along axis 0, 1: along axis 1
    rows = np.arange(len(a))
    s0, s1 = a[rows, major], b[rows, major]
    lo, hi = np.minimum(s0, s1), np.maximum(s0, s1)
    first = np.ceil(lo - ON_LINE).astype(np.int64)
    n = np.maximum(np.floor(hi + ON_LINE).astype(np.int64) - first + 1, 0)
    mask = np.zeros(shape, dtype=bool)
    if n.sum() == 0:
        return mask
    e = np.repeat(rows, n)
    step = first[e] + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    span = d[e, major[e]]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(span != 0, (step - a[e, major[e]]) / span, 0.0)
    t = np.clip(t, 0.0, 1.0)
    minor = a[e, 1 - major[e]] + t * d[e, 1 - major[e]]
    on_major = np.abs(a[e, major[e]] + t * span - step) <= ON_LINE
    on_minor = np.abs(minor - np.round(minor)) <= ON_LINE
    ok = on_major & on_minor
    ij = np.empty((int(ok.sum()), 2), dtype=np.int64)
    ij[:, 0] = np.where(major[e][ok] == 0, step[ok], np.round(minor[ok]))
    ij[:, 1] = np.where(major[e][ok] == 1, step[ok], np.round(minor[ok]))
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < nx) & (ij[:, 1] >= 0) & (ij[:, 1] < ny)
    mask[ij[inside, 0], ij[inside, 1]] = True
    return mask


def fill_box(polys: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
    """The filled mask of one slice's polygons inside their bounding box (clipped to ``shape``), and that box."""
    polys = [np.asarray(p, dtype=np.float64) for p in polys if len(p)]
    if not polys:
        return (slice(0, 0), slice(0, 0)), np.zeros((0, 0), dtype=bool)
    a, b = _edges(polys)
    lo = np.clip(np.floor(a.min(axis=0)).astype(np.int64) - 1, 0, shape)
    hi = np.clip(np.ceil(a.max(axis=0)).astype(np.int64) + 2, 0, shape)
    box = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])))
    sub = (int(hi[0] - lo[0]), int(hi[1] - lo[1]))
    if sub[0] <= 0 or sub[1] <= 0:
        return box, np.zeros((max(sub[0], 0), max(sub[1], 0)), dtype=bool)
    a, b = a - lo, b - lo
    return box, _interior(a, b, sub) | _on_lines(a, b, sub)


def fill_polygons(polys: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Mask of one slice from its polygons in (axis0, axis1) voxel coordinates (see the module rule)."""
    mask = np.zeros(shape, dtype=bool)
    box, filled = fill_box(polys, shape)
    mask[box] = filled
    return mask
