"""Geometric facts of one case that QA and training statistics share: volumes, pieces, edges, positions.

Everything is measured in the patient frame (RAS+ millimetres from the affine), so a DICOM series
and a NIfTI file of the same patient give the same numbers whatever their array axis order.
"""
from __future__ import annotations

from typing import Any, Sequence

import nibabel.orientations as nio
import numpy as np
from scipy import ndimage

from rtseg.errors import DataError

#: Body threshold (HU): voxels above it count as patient (as the predictor's body box).
BODY_HU = -500.0
#: RAS+ axis names and the words for each direction (negative, positive).
RAS_AXES: tuple[str, ...] = ("x", "y", "z")
DIRECTION_WORDS: tuple[tuple[str, str], ...] = (("left", "right"), ("posterior", "anterior"), ("inferior", "superior"))
_STRUCTURE_26 = ndimage.generate_binary_structure(3, 3)


def check_grid(labels: np.ndarray, affine: np.ndarray, what: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """A 3D integer label array and a 4x4 affine, or one clear error."""
    labels = np.asarray(labels)
    aff = np.asarray(affine, dtype=np.float64)
    if labels.ndim != 3:
        raise DataError(f"{what}: expected a 3D label volume, found shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DataError(f"{what}: expected integer labels, found {labels.dtype}")
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise DataError(f"{what}: expected a finite, invertible 4x4 affine, got shape {aff.shape}")
    return labels, aff


def ras_axes(affine: np.ndarray) -> list[tuple[int, int]]:
    """For each array axis: (RAS axis index, +1 if the index grows towards R/A/S else -1)."""
    ornt = nio.io_orientation(np.asarray(affine, dtype=np.float64))
    return [(int(a), int(s)) for a, s in ornt]


def spacing_ras(affine: np.ndarray) -> list[float]:
    """Voxel size (mm) along x (L-R), y (P-A), z (I-S)."""
    sp = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    out = [0.0, 0.0, 0.0]
    for axis, (ras, _) in enumerate(ras_axes(affine)):
        out[ras] = float(sp[axis])
    return out


def fov_ras(shape: Sequence[int], affine: np.ndarray) -> list[float]:
    """Field of view (mm) along x, y, z: voxels times spacing."""
    sp = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    out = [0.0, 0.0, 0.0]
    for axis, (ras, _) in enumerate(ras_axes(affine)):
        out[ras] = float(shape[axis] * sp[axis])
    return out


def edge_faces(mask_box: tuple[slice, ...] | None, shape: Sequence[int], affine: np.ndarray) -> list[str]:
    """Scan edges an organ's bounding box touches, in words ('inferior', 'left', ...): a sign of a cut-off organ."""
    if mask_box is None:
        return []
    faces = []
    for axis, (ras, sign) in enumerate(ras_axes(affine)):
        low_word, high_word = DIRECTION_WORDS[ras] if sign > 0 else DIRECTION_WORDS[ras][::-1]
        if mask_box[axis].start == 0:
            faces.append(low_word)
        if mask_box[axis].stop == shape[axis]:
            faces.append(high_word)
    return sorted(faces)


def world_centroid(mask: np.ndarray, affine: np.ndarray, offset: Sequence[int] = (0, 0, 0)) -> np.ndarray | None:
    """Centre of mass (RAS+ mm) of a boolean mask whose index (0, 0, 0) sits at voxel ``offset``."""
    mask = np.asarray(mask, dtype=bool)
    plane = mask.sum(axis=2, dtype=np.int64)  # per-axis voxel counts from two passes (scipy's center_of_mass: ~5x slower)
    n = int(plane.sum())
    if n == 0:
        return None
    profiles = (plane.sum(axis=1), plane.sum(axis=0), mask.sum(axis=(0, 1), dtype=np.int64))
    com = np.array([float(np.dot(np.arange(p.size, dtype=np.float64), p)) / n for p in profiles])
    com += np.asarray(offset, dtype=np.float64)
    return (np.asarray(affine) @ np.append(com, 1.0))[:3]


def body_centroid(ct: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centre (RAS+ mm) of the voxels above BODY_HU; the whole volume's centre if none or all are."""
    body = np.asarray(ct) > BODY_HU
    centre = world_centroid(body, affine) if body.any() and not body.all() else None
    if centre is None:
        mid = (np.asarray(ct.shape, dtype=np.float64) - 1) / 2.0
        centre = (np.asarray(affine) @ np.append(mid, 1.0))[:3]
    return centre


def component_volumes_ml(mask: np.ndarray, voxel_ml: float) -> list[float]:
    """Volumes (ml) of a mask's 26-connected pieces, largest first (26 as in --largest-component)."""
    lab, n = ndimage.label(mask, structure=_STRUCTURE_26)
    if n == 0:
        return []
    counts = np.bincount(lab.ravel())[1:]
    return [round(float(c) * voxel_ml, 3) for c in sorted(counts, reverse=True)]


def organ_facts(labels: np.ndarray, affine: np.ndarray, class_names: Sequence[str],
                ct: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per organ (labels 1..N-1): volume (ml), pieces, scan edges touched, centroid relative to the body (mm)."""
    labels, affine = check_grid(labels, affine)
    if ct is not None and np.shape(ct) != labels.shape:
        raise DataError(f"CT shape {np.shape(ct)} differs from label shape {labels.shape}")
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    n_named = len(class_names) - 1
    boxes = ndimage.find_objects(labels.astype(np.int32, copy=False) if labels.dtype == bool else labels)
    extra = [i + 1 for i, b in enumerate(boxes) if b is not None and i + 1 > n_named]
    if extra:
        raise DataError(f"labels contain label(s) {extra} but only {n_named} organ names were given ({', '.join(class_names[1:])})")
    body = body_centroid(ct, affine) if ct is not None else None
    rows = []
    for c in range(1, n_named + 1):
        box = boxes[c - 1] if c - 1 < len(boxes) else None
        row: dict[str, Any] = {"organ": class_names[c], "label": c, "volume_ml": 0.0, "components": 0,
                               "component_ml": [], "edges": [], "centroid_offset_mm": None}
        if box is not None:
            mask = labels[box] == c
            pieces = component_volumes_ml(mask, voxel_ml)
            row.update(volume_ml=round(sum(pieces), 3), components=len(pieces), component_ml=pieces[:5],
                       edges=edge_faces(box, labels.shape, affine))
            if body is not None:
                centre = world_centroid(mask, affine, [s.start for s in box])
                row["centroid_offset_mm"] = [round(float(v), 2) for v in centre - body]  # type: ignore[operator]
        rows.append(row)
    return rows


def hu_percentiles(ct: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Percentiles of whole-HU values from a histogram: exact ('lower' rule), fast, independent of voxel order."""
    v = np.clip(np.rint(np.asarray(ct, dtype=np.float32)), -32768, 32767).astype(np.int32).ravel()
    lo = int(v.min())
    cum = np.cumsum(np.bincount(v - lo))
    return [float(lo + int(np.searchsorted(cum, int(np.floor(q / 100.0 * (cum[-1] - 1))) + 1))) for q in qs]


def input_facts(ct: np.ndarray, affine: np.ndarray) -> dict[str, Any]:
    """What the input checks compare with training: intensity percentiles, spacing and field of view (RAS order)."""
    ct = np.asarray(ct)
    if ct.ndim != 3:
        raise DataError(f"CT: expected a 3D volume, found shape {ct.shape}")
    p01, p99 = hu_percentiles(ct, (1.0, 99.0))
    return {
        "hu_p01": round(float(p01), 1),
        "hu_p99": round(float(p99), 1),
        "spacing_mm": [round(s, 4) for s in spacing_ras(affine)],
        "fov_mm": [round(f, 2) for f in fov_ras(ct.shape, affine)],
    }
