"""Per-organ clean-up of predicted labels: keep the largest connected component, fill enclosed holes.

Both work on each organ's bounding box (``scipy.ndimage.find_objects``), so the
cost follows organ size, not volume size. Removed voxels become background;
filled holes take only background voxels (another organ inside a cavity stays).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional

import numpy as np
from scipy import ndimage

from rtseg.errors import ConfigError


def _classes(labels: np.ndarray, classes: Optional[Iterable[int]]) -> list[int]:
    present = [int(c) for c in np.unique(labels) if c > 0]
    return present if classes is None else [c for c in present if c in set(int(x) for x in classes)]


def _organs(out: np.ndarray, classes: Optional[Iterable[int]]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(label, the view of ``out`` in that organ's bounding box, the organ's mask there), organ by organ."""
    boxes = ndimage.find_objects(out)
    for c in _classes(out, classes):
        sl = boxes[c - 1]
        if sl is not None:
            sub = out[sl]
            yield c, sub, sub == c


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2, 3):
        raise ConfigError(f"connectivity must be 1 (faces), 2 (edges) or 3 (corners), got {connectivity}")
    return ndimage.generate_binary_structure(3, connectivity)


def keep_largest_component(labels: np.ndarray, classes: Optional[Iterable[int]] = None, connectivity: int = 3) -> np.ndarray:
    """A copy where each organ keeps only its largest connected component (default 26-connectivity)."""
    out = np.array(labels, copy=True)
    structure = _structure(connectivity)
    for _, sub, mask in _organs(out, classes):
        comp, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        sub[mask & (comp != int(sizes.argmax()))] = 0
    return out


def fill_holes(labels: np.ndarray, classes: Optional[Iterable[int]] = None, per_slice: bool = False) -> np.ndarray:
    """A copy where background enclosed by an organ becomes that organ.

    3D by default (a cavity must be closed on all sides); ``per_slice`` fills
    holes in each axial (axis-2) slice instead, which also closes tubes such as a
    rectum with gas.
    """
    out = np.array(labels, copy=True)
    for c, sub, mask in _organs(out, classes):
        if per_slice:
            filled = np.stack([ndimage.binary_fill_holes(mask[:, :, k]) for k in range(mask.shape[2])], axis=2)
        else:
            filled = ndimage.binary_fill_holes(mask)
        sub[filled & (sub == 0)] = c
    return out


def postprocess(labels: np.ndarray, largest_component: bool = False, fill: bool = False,
                classes: Optional[Iterable[int]] = None) -> np.ndarray:
    """Largest component first (so a stray blob cannot enclose anything), then hole filling."""
    out = labels
    if largest_component:
        out = keep_largest_component(out, classes)
    if fill:
        out = fill_holes(out, classes)
    return out


def postprocess_organs(labels: np.ndarray, largest_component: Iterable[int] = (), fill: Iterable[int] = ()) -> np.ndarray:
    """A per-organ choice (``rtseg cv``'s): largest component for the labels in ``largest_component``, then hole
    filling for those in ``fill``; the labels themselves when both are empty."""
    keep, holes = sorted(set(largest_component)), sorted(set(fill))
    out = keep_largest_component(labels, keep) if keep else labels
    return fill_holes(out, holes) if holes else out
