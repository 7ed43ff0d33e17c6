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

from rtseg.errors import DataError
from rtseg.evaluation.surface import _bbox_of, _check_spacing, _check_tolerance, _surface, _union_with_margin

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


def _surface_measures(auto: np.ndarray, approved: np.ndarray, sp: tuple[float, float, float],
                      tolerances: Sequence[float]) -> dict[str, float]:
    """Surface Dice per tolerance and HD95 from one pair of distance transforms on the union's box (both non-empty)."""
    box = _union_with_margin([_bbox_of(auto), _bbox_of(approved)], auto.shape)
    a, b = auto[box], approved[box]
    sa, sb = _surface(a), _surface(b)
    d_ab = ndimage.distance_transform_edt(~sb, sampling=sp)[sa]
    d_ba = ndimage.distance_transform_edt(~sa, sampling=sp)[sb]
    out = {_tol_key(t): (np.count_nonzero(d_ab <= t) + np.count_nonzero(d_ba <= t)) / (d_ab.size + d_ba.size)
           for t in tolerances}
    out["hd95_mm"] = float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))
    return out


def edit_measures(auto: np.ndarray, approved: np.ndarray, spacing: Sequence[float],
                  tolerances: Sequence[float] = SURFACE_TOLERANCES_MM,
                  apl_tolerance_mm: float = APL_TOLERANCE_MM) -> dict[str, Any]:
    """``{"status", <edit_keys>}`` of one organ (boolean or 0/1 masks of one 3D shape)."""
    auto, approved = np.asarray(auto, dtype=bool), np.asarray(approved, dtype=bool)
    if auto.ndim != 3 or auto.shape != approved.shape:
        raise DataError(f"auto and approved masks must be 3D of one shape, got {auto.shape} and {approved.shape}")
    sp = _check_spacing(spacing)
    tols = [_check_tolerance(t) for t in tolerances]
    n_a, n_b = int(np.count_nonzero(auto)), int(np.count_nonzero(approved))
    voxel_ml = float(np.prod(sp)) / 1000.0
    out: dict[str, Any] = {"status": _status(n_a, n_b, n_a == n_b and bool(np.array_equal(auto, approved)))}
    if n_a and n_b:
        out["dice"] = 2.0 * int(np.count_nonzero(auto & approved)) / (n_a + n_b)
        surf = _surface_measures(auto, approved, sp, tols)
    else:  # docs/METRICS.md: both empty -> 1 and 0 mm; one empty -> 0 and inf
        both = not n_a and not n_b
        out["dice"] = 1.0 if both else 0.0
        surf = {**{_tol_key(t): out["dice"] for t in tols}, "hd95_mm": 0.0 if both else float("inf")}
    out.update({k: v for k, v in surf.items() if k != "hd95_mm"})
    apl, length = added_path_length(auto, approved, sp, apl_tolerance_mm)
    out["apl_mm"] = apl
    out["apl_pct"] = 100.0 * apl / length if length else 0.0
    out["hd95_mm"] = surf["hd95_mm"]
    out["vol_auto_ml"], out["vol_approved_ml"] = n_a * voxel_ml, n_b * voxel_ml
    out["volume_ratio"] = n_b / n_a if n_a else (1.0 if not n_b else float("inf"))
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
