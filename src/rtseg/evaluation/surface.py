"""Overlap and surface-distance metrics per organ, computed on the organ's bounding box only.

Surfaces and distances follow MONAI (``get_mask_edges`` / ``get_surface_distance``):
a surface voxel is a foreground voxel removed by one binary erosion (SciPy's default
6-connected cross, outside-the-image counted as background), and a distance is the exact
Euclidean distance in mm between voxel centres, with anisotropic spacing. Hausdorff-type
values are therefore equal to MONAI's metrics on the same masks. What differs is speed: we
crop once to ``pred | gt`` plus a 1-voxel margin, run the exact distance transform on that box
only, and derive every metric from one pass. Empty-mask conventions are documented in
docs/METRICS.md and in :func:`organ_metrics`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage

from rtseg.errors import DataError

#: Metric keys of :func:`organ_metrics`, in report order.
METRIC_KEYS: tuple[str, ...] = (
    "dice",
    "iou",
    "hd",
    "hd95",
    "assd",
    "avg_hd",
    "surface_dice",
    "rvd",
    "vol_pred_ml",
    "vol_gt_ml",
)
#: 0/1 flags that accompany the metrics so empty masks are never hidden in an average.
FLAG_KEYS: tuple[str, ...] = ("empty_gt", "empty_pred")
#: Metrics where smaller is better (distances); the rest are larger-is-better or signed.
DISTANCE_KEYS: tuple[str, ...] = ("hd", "hd95", "assd", "avg_hd")

_STRUCTURE = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class Metric:
    """A metric added beside the built-in ones: computed on the organ's box, with its empty-mask convention."""

    name: str
    title: str  # column title in the reports
    compute: Callable[[np.ndarray, np.ndarray, tuple[float, float, float]], float]  # (pred, gt, spacing mm) -> value
    if_empty: Callable[[int, int], float]  # (predicted voxels, true voxels), one of them 0 -> value


REGISTERED: dict[str, Metric] = {}
"""Added metrics by name; :func:`register_metric` fills it, every report and CSV follows."""


def register_metric(metric: Metric) -> Metric:
    """A new metric is one function and this call: ``rtseg evaluate``, ``val/test`` and the reports pick it up."""
    if metric.name in METRIC_KEYS or metric.name in FLAG_KEYS or metric.name in REGISTERED:
        raise ValueError(f"metric {metric.name!r} is already defined")
    REGISTERED[metric.name] = metric
    return metric


def metric_keys() -> tuple[str, ...]:
    """Every metric key in report order: the built-in ones, then the registered ones."""
    return METRIC_KEYS + tuple(REGISTERED)


def _registered_values(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float, float],
                       n_pred: int, n_gt: int) -> dict[str, float]:
    empty = n_pred == 0 or n_gt == 0
    return {m.name: float(m.if_empty(n_pred, n_gt) if empty else m.compute(pred, gt, spacing)) for m in REGISTERED.values()}


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise DataError(f"voxel spacing must be three positive finite numbers (mm), got {tuple(spacing)}")
    return sp  # type: ignore[return-value]


def _check_tolerance(tolerance_mm: float) -> float:
    tol = float(tolerance_mm)
    if not np.isfinite(tol) or tol < 0:
        raise DataError(f"surface Dice tolerance must be a finite number >= 0 mm, got {tolerance_mm}")
    return tol


def _bbox_of(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box of a boolean mask from its axis projections (no index arrays)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _union_with_margin(
    boxes: Iterable[tuple[slice, ...] | None], shape: Sequence[int], margin: int = 1
) -> tuple[slice, ...] | None:
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return tuple(
        slice(max(0, min(b[ax].start for b in boxes) - margin), min(int(shape[ax]), max(b[ax].stop for b in boxes) + margin))
        for ax in range(len(shape))
    )


def _surface(mask: np.ndarray) -> np.ndarray:
    # border_value=0: voxels on the image edge are surface, as MONAI's zero-padded crop makes them.
    return mask & ~ndimage.binary_erosion(mask, structure=_STRUCTURE, border_value=0)


def _empty_metrics(n_pred: int, n_gt: int, voxel_ml: float) -> dict[str, float]:
    """The documented conventions for an empty prediction and/or an empty ground truth."""
    inf = float("inf")
    both = n_pred == 0 and n_gt == 0
    return {**_builtin_empty(n_pred, n_gt, voxel_ml, inf, both),
            **{m.name: float(m.if_empty(n_pred, n_gt)) for m in REGISTERED.values()}}


def _builtin_empty(n_pred: int, n_gt: int, voxel_ml: float, inf: float, both: bool) -> dict[str, float]:
    return {
        "dice": 1.0 if both else 0.0,
        "iou": 1.0 if both else 0.0,
        "hd": 0.0 if both else inf,
        "hd95": 0.0 if both else inf,
        "assd": 0.0 if both else inf,
        "avg_hd": 0.0 if both else inf,
        "surface_dice": 1.0 if both else 0.0,
        "rvd": 0.0 if both else (-1.0 if n_pred == 0 else inf),
        "vol_pred_ml": n_pred * voxel_ml,
        "vol_gt_ml": n_gt * voxel_ml,
        "empty_gt": float(n_gt == 0),
        "empty_pred": float(n_pred == 0),
    }


def _metrics_in_box(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float, float], tolerance_mm: float) -> dict[str, float]:
    """All metrics for boolean masks already cropped to their union bounding box plus margin."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    n_pred = int(np.count_nonzero(pred))
    n_gt = int(np.count_nonzero(gt))
    if n_pred == 0 or n_gt == 0:
        return _empty_metrics(n_pred, n_gt, voxel_ml)
    inter = int(np.count_nonzero(pred & gt))
    union = n_pred + n_gt - inter

    surf_pred = _surface(pred)
    surf_gt = _surface(gt)
    # Exact EDT on the crop: every surface voxel of both masks lies inside it, so the
    # nearest-surface distance is the same as over the whole volume.
    d_pred_to_gt = ndimage.distance_transform_edt(~surf_gt, sampling=spacing)[surf_pred]
    d_gt_to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=spacing)[surf_gt]
    mean_pg = float(d_pred_to_gt.mean())
    mean_gp = float(d_gt_to_pred.mean())
    n_sp, n_sg = d_pred_to_gt.size, d_gt_to_pred.size
    within = int(np.count_nonzero(d_pred_to_gt <= tolerance_mm)) + int(np.count_nonzero(d_gt_to_pred <= tolerance_mm))
    return {
        "dice": 2.0 * inter / (n_pred + n_gt),
        "iou": inter / union,
        "hd": float(max(d_pred_to_gt.max(), d_gt_to_pred.max())),
        # MONAI: the larger of the two directed 95th percentiles (linear interpolation).
        "hd95": float(max(np.percentile(d_pred_to_gt, 95), np.percentile(d_gt_to_pred, 95))),
        "assd": (mean_pg * n_sp + mean_gp * n_sg) / (n_sp + n_sg),
        "avg_hd": 0.5 * (mean_pg + mean_gp),
        "surface_dice": within / (n_sp + n_sg),
        "rvd": (n_pred - n_gt) / n_gt,
        "vol_pred_ml": n_pred * voxel_ml,
        "vol_gt_ml": n_gt * voxel_ml,
        **_registered_values(pred, gt, spacing, n_pred, n_gt),
        "empty_gt": 0.0,
        "empty_pred": 0.0,
    }


def organ_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 2.0
) -> dict[str, float]:
    """Overlap, distance (mm) and volume (ml) metrics of one organ; keys :data:`METRIC_KEYS` + :data:`FLAG_KEYS`.

    Empty masks (see docs/METRICS.md): both empty -> dice/iou/surface_dice 1, distances 0,
    rvd 0; exactly one empty -> dice/iou/surface_dice 0, distances +inf, rvd -1 (empty
    prediction) or +inf (empty ground truth). ``empty_gt`` / ``empty_pred`` flag these rows.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise DataError(f"prediction and ground truth must be 3D masks of one shape, got {pred.shape} and {gt.shape}")
    sp = _check_spacing(spacing)
    tol = _check_tolerance(tolerance_mm)
    pred = pred.astype(bool, copy=False)
    gt = gt.astype(bool, copy=False)
    box = _union_with_margin([_bbox_of(pred), _bbox_of(gt)], pred.shape)
    if box is None:
        return _empty_metrics(0, 0, float(np.prod(sp)) / 1000.0)
    return _metrics_in_box(pred[box], gt[box], sp, tol)


def _as_labels(arr: np.ndarray, what: str) -> np.ndarray:
    """Integer label array (find_objects needs integers); float files must hold whole numbers."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise DataError(f"{what}: expected a 3D label volume, found shape {arr.shape}")
    if arr.dtype == bool:
        return arr.view(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{what}: expected integer labels, found non-integer values of type {arr.dtype}")
        arr = arr.astype(np.int32)
    lo = arr.min() if arr.size else 0
    if lo < 0:
        raise DataError(f"{what}: labels must be >= 0, found {int(lo)}")
    return arr


def labels_present(labels: np.ndarray) -> set[int]:
    """Non-zero labels occurring in a label volume (one pass, no sort)."""
    boxes = ndimage.find_objects(_as_labels(labels, "label volume"))
    return {i + 1 for i, b in enumerate(boxes) if b is not None}


def case_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    spacing: Sequence[float],
    class_names: Sequence[str],
    tolerance_mm: float = 2.0,
    classes_present: set[int] | None = None,
    *,
    case_id: str | None = None,
) -> list[dict[str, Any]]:
    """One row per organ: ``{"case"?, "organ", <metrics>}``; ``class_names[0]`` is background (skipped).

    ``classes_present`` lists the labels that were contoured in this case; other organs
    produce no row (partially labelled data such as OpenKBP). Labels found in the data but
    without a name are an error, not silently dropped.
    """
    pred_labels = _as_labels(pred_labels, "prediction")
    gt_labels = _as_labels(gt_labels, "ground truth")
    if pred_labels.shape != gt_labels.shape:
        raise DataError(f"prediction shape {pred_labels.shape} differs from ground truth shape {gt_labels.shape}")
    sp = _check_spacing(spacing)
    tol = _check_tolerance(tolerance_mm)
    n_named = len(class_names) - 1
    if n_named < 1:
        raise DataError(f"class_names must name background and at least one organ, got {list(class_names)}")

    # One pass per volume gives every label's bounding box (much cheaper than per-organ scans).
    boxes_gt = ndimage.find_objects(gt_labels)
    boxes_pred = ndimage.find_objects(pred_labels)
    for what, boxes in (("ground truth", boxes_gt), ("prediction", boxes_pred)):
        extra = [i + 1 for i, b in enumerate(boxes) if b is not None and i + 1 > n_named]
        if extra:
            raise DataError(
                f"{what} contains label(s) {extra} but only {n_named} organ names were given ({', '.join(class_names[1:])})"
            )

    labels = range(1, n_named + 1)
    if classes_present is not None:
        labels = [c for c in labels if c in classes_present]  # type: ignore[assignment]
    rows: list[dict[str, Any]] = []
    for c in labels:
        bg = boxes_gt[c - 1] if c - 1 < len(boxes_gt) else None
        bp = boxes_pred[c - 1] if c - 1 < len(boxes_pred) else None
        box = _union_with_margin([bg, bp], gt_labels.shape)
        if box is None:
            values = _empty_metrics(0, 0, float(np.prod(sp)) / 1000.0)
        else:
            values = _metrics_in_box(pred_labels[box] == c, gt_labels[box] == c, sp, tol)
        row: dict[str, Any] = {} if case_id is None else {"case": case_id}
        row["organ"] = class_names[c]
        row.update(values)
        rows.append(row)
    return rows
