"""Edit measures: how much a physician changed an automatic contour before approving it.

Both masks are on one grid (the CT's), ``auto`` the node's or model's output, ``approved`` the
clinic's version. Per organ:

- ``dice``: volumetric Dice of the two masks.
- ``surface_dice_<t>mm`` (Nikolov et al. 2021): the fraction of both surfaces lying within ``t`` mm of
  the other surface; surfaces and distances exactly as :mod:`rtseg.evaluation.surface` (MONAI's
  definitions: one 6-connected erosion, exact Euclidean distances in mm).
- ``apl_mm`` (added path length, Vaassen et al. 2020): per axial slice (the array's third axis, the
  one RTSTRUCT contours are drawn in), the boundary pixels of the *approved* contour that lie farther
  than ``apl_tolerance_mm`` from the boundary of the *auto* contour on the same slice, counted and
  multiplied by the in-plane pixel size (the mean of the two in-plane spacings), summed over slices.
  A boundary pixel is a pixel of the mask removed by one 4-connected 2D erosion (the image edge is
  outside). A slice with no auto contour adds the approved contour's whole length. Deleted parts
  add nothing: APL is what had to be drawn. ``apl_pct`` is APL as % of the approved contour's length
  (its boundary pixels times the pixel size, over all slices).
- ``hd95_mm``: the larger of the two directed 95th percentile surface distances (MONAI's HD95).
- ``volume_ratio``: approved volume / auto volume (1 unchanged, > 1 the physician added).

``status``: ``unchanged`` (the masks are identical), ``edited``, ``deleted`` (auto has the organ, the
approved set has not), ``added`` (the approved set has an organ the auto set had not). Deleted and
added rows follow the empty-mask conventions of docs/METRICS.md (Dice 0, distances +inf) with APL
0 (deleted) or the whole approved length (added).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from rtseg.evaluation.surface import _bbox_of, _check_spacing, _check_tolerance, _union_with_margin, organ_metrics

#: Surface Dice tolerances (mm) the audit reports.
SURFACE_TOLERANCES_MM: tuple[float, ...] = (1.0, 2.0, 3.0)
#: The APL tolerance (mm) used unless stated: an approved boundary pixel this close to the auto boundary was not drawn.
APL_TOLERANCE_MM = 0.0
STATUSES = ("unchanged", "edited", "deleted", "added")
_CROSS_2D = ndimage.generate_binary_structure(2, 1)


def _tol_key(t: float) -> str:
    return f"surface_dice_{t:g}mm"


def edit_keys(tolerances: Sequence[float] = SURFACE_TOLERANCES_MM) -> tuple[str, ...]:
    """Measure keys of :func:`edit_measures`, in report order."""
    return ("dice", *(_tol_key(t) for t in tolerances), "apl_mm", "apl_pct", "hd95_mm", "volume_ratio",
            "vol_auto_ml", "vol_approved_ml")


def _boundary_2d(mask2d: np.ndarray) -> np.ndarray:
    return mask2d & ~ndimage.binary_erosion(mask2d, structure=_CROSS_2D, border_value=0)


def added_path_length(auto: np.ndarray, approved: np.ndarray, spacing: Sequence[float],
                      tolerance_mm: float = APL_TOLERANCE_MM) -> tuple[float, float]:
    """(APL in mm, the approved contour's length in mm) over all axial slices; see the module rule."""
    sp = _check_spacing(spacing)
    tol = _check_tolerance(tolerance_mm)
    auto, approved = np.asarray(auto, dtype=bool), np.asarray(approved, dtype=bool)
    box = _union_with_margin([_bbox_of(approved), _bbox_of(auto)], approved.shape)
    if box is None or not approved.any():
        return 0.0, 0.0
    # the crop's 1-voxel margin keeps the rule at the image edge (outside counts as background there too)
    auto, approved = auto[box], approved[box]
    pixel_mm = 0.5 * (sp[0] + sp[1])
    added = total = 0
    for k in range(approved.shape[2]):
        b_new = _boundary_2d(approved[:, :, k])
        n_new = int(np.count_nonzero(b_new))
        if n_new == 0:
            continue
        total += n_new
        b_old = _boundary_2d(auto[:, :, k])
        if not b_old.any():
            added += n_new
            continue
        dist = ndimage.distance_transform_edt(~b_old, sampling=sp[:2])[b_new]
        added += int(np.count_nonzero(dist > tol))
    return added * pixel_mm, total * pixel_mm


def _status(n_auto: int, n_approved: int, identical: bool) -> str:
    if n_auto and not n_approved:
        return "deleted"
    if n_approved and not n_auto:
        return "added"
    return "unchanged" if identical else "edited"


def edit_measures(auto: np.ndarray, approved: np.ndarray, spacing: Sequence[float],
                  tolerances: Sequence[float] = SURFACE_TOLERANCES_MM,
                  apl_tolerance_mm: float = APL_TOLERANCE_MM) -> dict[str, Any]:
    """``{"status", <edit_keys>}`` of one organ (boolean or 0/1 masks of one 3D shape)."""
    auto, approved = np.asarray(auto, dtype=bool), np.asarray(approved, dtype=bool)
    sp = _check_spacing(spacing)
    first = organ_metrics(auto, approved, sp, tolerance_mm=tolerances[0] if tolerances else 2.0)
    out: dict[str, Any] = {"status": _status(int(first["vol_pred_ml"] > 0), int(first["vol_gt_ml"] > 0),
                                             bool(np.array_equal(auto, approved)))}
    out["dice"] = first["dice"]
    for i, t in enumerate(tolerances):
        out[_tol_key(t)] = first["surface_dice"] if i == 0 else organ_metrics(auto, approved, sp, tolerance_mm=t)["surface_dice"]
    apl, length = added_path_length(auto, approved, sp, apl_tolerance_mm)
    out["apl_mm"] = apl
    out["apl_pct"] = 100.0 * apl / length if length else 0.0
    out["hd95_mm"] = first["hd95"]
    out["vol_auto_ml"], out["vol_approved_ml"] = first["vol_pred_ml"], first["vol_gt_ml"]
    if first["vol_pred_ml"] > 0:
        out["volume_ratio"] = first["vol_gt_ml"] / first["vol_pred_ml"]
    else:
        out["volume_ratio"] = 1.0 if first["vol_gt_ml"] == 0 else float("inf")
    return out


def case_edits(auto_labels: np.ndarray, approved_labels: np.ndarray, spacing: Sequence[float],
               organs: Sequence[str], *, auto_has: set[str] | None = None, approved_has: set[str] | None = None,
               tolerances: Sequence[float] = SURFACE_TOLERANCES_MM,
               apl_tolerance_mm: float = APL_TOLERANCE_MM) -> list[dict[str, Any]]:
    """One row per organ (``organs[i]`` is label ``i + 1``) that either set holds: ``{"organ", "status", ...}``.

    ``auto_has`` / ``approved_has`` name the organs each structure set holds (an ROI with contours); by
    default an organ is held where its label has voxels.
    """
    auto_labels, approved_labels = np.asarray(auto_labels), np.asarray(approved_labels)
    rows = []
    for i, organ in enumerate(organs, start=1):
        a, b = auto_labels == i, approved_labels == i
        in_auto = organ in auto_has if auto_has is not None else bool(a.any())
        in_appr = organ in approved_has if approved_has is not None else bool(b.any())
        if not (in_auto or in_appr):
            continue
        rows.append({"organ": organ, **edit_measures(a if in_auto else np.zeros_like(a), b if in_appr else np.zeros_like(b),
                                                     spacing, tolerances, apl_tolerance_mm)})
    return rows
