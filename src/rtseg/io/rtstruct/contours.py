"""2D masks -> closed polygons for RTSTRUCT: marching squares, hole encoding, vectorised simplification.

Polygons are in (axis0, axis1) voxel coordinates of one slice. scikit-image's
marching squares at level 0.5 puts every vertex halfway between an inside and
an outside voxel centre, so no voxel centre lies on a polygon and filling it
again (centre-inside rule) gives back exactly the mask.

Holes are encoded one of two ways (``HOLE_ENCODINGS``):

- ``xor``: a hole is a separate inner polygon; readers must XOR nested contours.
- ``keyhole``: each hole is joined to the polygon around it by a zero-width cut
  along a half-voxel line (so the cut passes through no voxel centre). Every
  polygon then encloses only foreground, and readers that XOR, OR (union) or
  fill nested contours all get the same voxels.

Simplification is Douglas-Peucker run on all polygons of a slice at once
(numpy, one pass per refinement level). Every dropped vertex lies within the
tolerance of the kept segment, and the region between old and new outline is
within twice the tolerance of the old one; with the tolerance capped at
``MAX_TOLERANCE_VOXELS`` no voxel centre changes side.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

HOLE_ENCODINGS = ("keyhole", "xor")
DEFAULT_HOLE_ENCODING = "keyhole"
DEFAULT_TOLERANCE_MM = 0.1
MAX_TOLERANCE_VOXELS = 0.15  # 2 x 0.15 < 0.35, the closest a voxel centre comes to a marching-squares outline


def signed_area(poly: np.ndarray) -> float:
    """Shoelace area in (axis0, axis1) coordinates: < 0 for outer boundaries, > 0 for holes (skimage's orientation)."""
    x, y = poly[:, 0], poly[:, 1]
    return float((x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1]) / 2.0)


def mask_rings(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed rings (M, 2), without the repeated first point, around the foreground of a 2D mask.

    Only the bounding box is traced (marching squares cost grows with the area scanned).
    """
    from skimage.measure import find_contours  # lazily: CLI start-up imports this module for its constants

    rows = np.flatnonzero(mask2d.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask2d.any(axis=0))
    r0, c0 = int(rows[0]), int(cols[0])
    crop = mask2d[r0:int(rows[-1]) + 1, c0:int(cols[-1]) + 1]
    padded = np.pad(crop.astype(np.float32), 1)
    offset = np.array([r0 - 1.0, c0 - 1.0])
    out = []
    for c in find_contours(padded, 0.5):
        if len(c) > 1 and np.array_equal(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:
            out.append(c + offset)
    return out


def _inside(point: np.ndarray, ring: np.ndarray) -> bool:
    """Even-odd point-in-polygon (the point is never on the ring: rings do not touch)."""
    x, y = ring[:, 0], ring[:, 1]
    x2, y2 = np.roll(x, -1), np.roll(y, -1)
    crosses = (y > point[1]) != (y2 > point[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x + (point[1] - y) * (x2 - x) / (y2 - y)
    return bool(np.count_nonzero(crosses & (xs > point[0])) % 2)


def _first_contact(p: np.ndarray, ring: np.ndarray) -> tuple[float, int] | None:
    """Where the ray from ``p`` along +axis0 (axis1 fixed) first touches ``ring``: (axis0 value, edge index)."""
    y0 = p[1]
    a, b = ring, np.roll(ring, -1, axis=0)
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    hit = (lo <= y0) & (y0 <= hi)
    flat = hit & (a[:, 1] == b[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(flat, np.minimum(a[:, 0], b[:, 0]), a[:, 0] + (y0 - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1]))
    ok = hit & (xs > p[0] + 1e-9)
    if not ok.any():
        return None
    idx = np.flatnonzero(ok)
    e = int(idx[np.argmin(xs[idx])])
    return float(xs[e]), e


def _top_vertex(poly: np.ndarray) -> int:
    """The right-most vertex on the top line (largest axis 1): a ray from it along +axis0 runs outside the polygon."""
    cand = np.flatnonzero(poly[:, 1] == poly[:, 1].max())
    return int(cand[np.argmax(poly[cand, 0])])


def _splice(hole: np.ndarray, i: int, target: np.ndarray, x: float, e: int) -> np.ndarray:
    """``target`` with ``hole`` (starting at its vertex ``i``) inserted through a cut to (x, hole[i, 1]) on edge ``e``."""
    p = hole[i]
    q = np.array([x, p[1]])
    around = np.roll(hole, -i, axis=0)  # starts at p
    return np.concatenate([target[:e + 1], q[None], around, p[None], q[None], target[e + 1:]])


def _dedupe(poly: np.ndarray) -> np.ndarray:
    """Drop consecutive repeated vertices (closing point included)."""
    keep = np.any(poly != np.roll(poly, 1, axis=0), axis=1)
    return poly[keep] if keep.any() else poly[:1]


def keyhole(outer: np.ndarray, holes: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One polygon: ``outer`` with every hole joined by a cut; also the indices of the cut vertices (to keep).

    The cut leaves a hole at its top line (a half-voxel line, so it passes no
    voxel centre) and runs along +axis0 through foreground to the first boundary
    it meets: the outer polygon (with the holes joined so far) or another hole,
    which then carries this one along. Holes are taken top line first.
    """
    pending = sorted((np.asarray(h) for h in holes), key=lambda h: float(h[:, 1].max()), reverse=True)
    boxes = [(h.min(axis=0), h.max(axis=0)) for h in pending]
    merged = np.asarray(outer)
    while pending:
        hole = pending.pop(0)
        boxes.pop(0)
        i = _top_vertex(hole)
        p = hole[i]
        best, target = _first_contact(p, merged), -1
        for j, other in enumerate(pending):
            lo, hi = boxes[j]
            if not (lo[1] <= p[1] <= hi[1] and hi[0] > p[0]):
                continue  # the ray cannot touch this hole
            c = _first_contact(p, other)
            if c is not None and (best is None or c[0] < best[0]):
                best, target = c, j
        if best is None:  # cannot happen for marching-squares rings
            raise ValueError("keyhole: a hole does not lie inside its outer boundary")
        if target < 0:
            merged = _splice(hole, i, merged, *best)
        else:
            pending[target] = _splice(hole, i, pending[target], *best)
            lo, hi = boxes[target]
            boxes[target] = (np.minimum(lo, hole.min(axis=0)), np.maximum(hi, hole.max(axis=0)))
    merged = _dedupe(merged)
    # vertices that occur twice are the cut's ends: pin them so simplification keeps the cut exact
    order = np.lexsort((merged[:, 1], merged[:, 0]))
    same = np.all(merged[order][1:] == merged[order][:-1], axis=1)
    pinned = np.unique(np.concatenate([order[1:][same], order[:-1][same]]))
    return merged, pinned


def encode_slice(mask2d: np.ndarray, holes: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Polygons for one slice as (points, pinned vertex indices), holes encoded as ``holes`` says."""
    rings = mask_rings(mask2d)
    if holes == "xor":
        return [(r, np.zeros(0, dtype=np.int64)) for r in rings]
    if holes != "keyhole":
        raise ValueError(f"hole encoding {holes!r}: expected one of {HOLE_ENCODINGS}")
    areas = [signed_area(r) for r in rings]
    outers = [i for i, a in enumerate(areas) if a < 0]
    inner = [i for i, a in enumerate(areas) if a >= 0]
    children: dict[int, list[np.ndarray]] = {i: [] for i in outers}
    lo = np.array([rings[o].min(axis=0) for o in outers]).reshape(-1, 2)
    hi = np.array([rings[o].max(axis=0) for o in outers]).reshape(-1, 2)
    for h in inner:
        p = rings[h][0]
        around = [outers[j] for j in np.flatnonzero(np.all((lo < p) & (p < hi), axis=1))]
        if len(around) > 1:  # every hole lies in some outer boundary: test only when the boxes leave a choice
            around = [o for o in around if _inside(p, rings[o])]
        if around:  # the smallest enclosing outer boundary is the one the hole belongs to
            children[min(around, key=lambda o: -areas[o])].append(rings[h])
    out = []
    for o in outers:
        if children[o]:
            out.append(keyhole(rings[o], children[o]))
        else:
            out.append((rings[o], np.zeros(0, dtype=np.int64)))
    return out


def simplify_polygons(polys: Sequence[np.ndarray], tolerance: float, pinned: Sequence[np.ndarray] | None = None,
                      scale: tuple[float, float] = (1.0, 1.0)) -> list[np.ndarray]:
    """Douglas-Peucker on closed polygons, all refined together; ``tolerance`` in the units of ``coords * scale``.

    A polygon is cut at vertex 0 and at its farthest vertex into two chains;
    each pass keeps, in every chain piece, the vertex farthest from the piece's
    chord when it is beyond the tolerance. ``pinned`` vertices are always kept.
    """
    if not polys:
        return []
    sizes = np.array([len(p) for p in polys])
    flat = np.concatenate(polys) * np.asarray(scale)
    owner_flat = np.repeat(np.arange(len(polys)), sizes)
    at = np.arange(len(flat)) + owner_flat  # where each vertex goes once every polygon has its closing point
    starts = np.concatenate([[0], np.cumsum(sizes + 1)[:-1]])
    pts = np.empty((len(flat) + len(polys), 2))
    pts[at] = flat
    pts[starts + sizes] = pts[starts]  # closing point repeated
    keep = np.zeros(len(pts), dtype=bool)
    keep[starts] = True
    keep[starts + sizes] = True
    # the vertex farthest from vertex 0, per polygon (closing points excluded)
    owner = np.repeat(np.arange(len(polys)), sizes + 1)
    d0 = ((pts - pts[starts][owner]) ** 2).sum(axis=1)
    d0[starts + sizes] = -1.0
    far0 = np.flatnonzero(d0 == np.maximum.reduceat(d0, starts)[owner])
    keep[far0[np.unique(owner[far0], return_index=True)[1]]] = True
    if pinned is not None:
        pins = [s + np.asarray(pin, dtype=np.int64) for s, pin in zip(starts, pinned) if len(pin)]
        if pins:
            keep[np.concatenate(pins)] = True
    idx = np.arange(len(pts))
    active = np.flatnonzero(~keep)  # vertices whose piece may still need splitting
    while active.size:
        prev = np.maximum.accumulate(np.where(keep, idx, 0))[active]
        nxt = np.minimum.accumulate(np.where(keep, idx, len(pts) - 1)[::-1])[::-1][active]
        d = _segment_distance(pts[active], pts[prev], pts[nxt])
        far = d > tolerance
        if not far.any():
            break
        # the farthest vertex of each piece (pieces are identified by their starting kept vertex)
        piece = prev[far]
        order = np.lexsort((-d[far], piece))
        first = np.ones(len(order), dtype=bool)
        first[1:] = piece[order][1:] != piece[order][:-1]
        keep[active[far][order][first]] = True
        split = np.zeros(len(pts), dtype=bool)
        split[piece] = True
        active = active[split[prev] & ~keep[active]]
    kept = keep[at]
    counts = np.bincount(owner_flat[kept], minlength=len(polys))
    pieces = np.split(np.concatenate(polys)[kept], np.cumsum(counts)[:-1])
    return [piece if len(piece) >= 3 else poly for piece, poly in zip(pieces, polys)]


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each point of ``p`` to the segment a-b (row-wise)."""
    ab = b - a
    denom = (ab ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(denom > 0, ((p - a) * ab).sum(axis=1) / denom, 0.0)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt(((a + t[:, None] * ab - p) ** 2).sum(axis=1))


def effective_tolerance(tolerance_mm: float, spacing: tuple[float, float]) -> float:
    """The simplification tolerance in mm actually used: capped so that no voxel centre changes side."""
    return float(min(tolerance_mm, MAX_TOLERANCE_VOXELS * min(spacing)))
