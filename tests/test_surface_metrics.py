"""Per-organ metrics: equal to MONAI's on generated shapes, analytic answers, empty-mask conventions."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric
from scipy import ndimage

from rtseg.errors import DataError
from rtseg.evaluation import surface
from rtseg.evaluation.surface import FLAG_KEYS, METRIC_KEYS, case_metrics, labels_present, organ_metrics

SPACING = (0.9, 1.3, 2.7)  # anisotropic on purpose
RTOL = 1e-5


def ellipsoid(shape, centre, radii_mm, spacing=SPACING):
    grids = np.meshgrid(*[(np.arange(n) - c) * s / r for n, c, s, r in zip(shape, centre, spacing, radii_mm)], indexing="ij")
    return sum(g**2 for g in grids) <= 1.0


def blob(shape, seed, fraction=0.15):
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)
    return field > np.quantile(field, 1.0 - fraction)


def one_hot(labels: np.ndarray, n: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([labels == c for c in range(n)])[None].astype(np.float32))


def monai_reference(pred: np.ndarray, gt: np.ndarray, n: int, spacing, tol: float) -> dict[str, np.ndarray]:
    """MONAI's values per foreground class, plus avg_hd from its two directed mean distances."""
    p, g = one_hot(pred, n), one_hot(gt, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = {
            "dice": DiceMetric(include_background=False, ignore_empty=False)(p, g),
            "hd": HausdorffDistanceMetric(include_background=False)(p, g, spacing=spacing),
            "hd95": HausdorffDistanceMetric(include_background=False, percentile=95)(p, g, spacing=spacing),
            "assd": SurfaceDistanceMetric(include_background=False, symmetric=True)(p, g, spacing=spacing),
            "surface_dice": SurfaceDiceMetric([tol] * (n - 1), include_background=False)(p, g, spacing=spacing),
            "_mean_pg": SurfaceDistanceMetric(include_background=False)(p, g, spacing=spacing),
            "_mean_gp": SurfaceDistanceMetric(include_background=False)(g, p, spacing=spacing),
        }
    out = {k: v.numpy().reshape(-1).astype(np.float64) for k, v in ref.items()}
    out["avg_hd"] = 0.5 * (out.pop("_mean_pg") + out.pop("_mean_gp"))
    return out


def check_against_monai(pred: np.ndarray, gt: np.ndarray, names, spacing=SPACING, tol=2.0) -> list[dict]:
    rows = case_metrics(pred, gt, spacing, names, tolerance_mm=tol)
    ref = monai_reference(pred, gt, len(names), spacing, tol)
    for key, expected in ref.items():
        ours = np.array([r[key] for r in rows])
        np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=1e-6, err_msg=key)
    # IoU and volumes against direct whole-volume counting.
    for c, row in enumerate(rows, start=1):
        p, g = pred == c, gt == c
        assert row["iou"] == pytest.approx((p & g).sum() / (p | g).sum(), rel=1e-12)
        assert row["vol_pred_ml"] == pytest.approx(p.sum() * np.prod(spacing) / 1000.0, rel=1e-12)
        assert row["vol_gt_ml"] == pytest.approx(g.sum() * np.prod(spacing) / 1000.0, rel=1e-12)
        assert row["rvd"] == pytest.approx((p.sum() - g.sum()) / g.sum(), rel=1e-12)
    return rows


def test_ellipsoids_equal_monai() -> None:
    shape = (48, 40, 24)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    gt[ellipsoid(shape, (16, 20, 12), (10, 14, 20))] = 1
    pred[ellipsoid(shape, (17.5, 19, 11), (11, 12, 22))] = 1
    gt[ellipsoid(shape, (36, 20, 10), (6, 9, 15))] = 2
    pred[ellipsoid(shape, (35, 22, 12), (7, 8, 12))] = 2
    # Organ touching the image border in both volumes: surfaces must match MONAI's padded crop.
    gt[ellipsoid(shape, (46, 2, 0), (5, 5, 8))] = 3
    pred[ellipsoid(shape, (45, 1, 1), (6, 4, 8))] = 3
    rows = check_against_monai(pred, gt, ["background", "a", "b", "c"])
    assert [r["organ"] for r in rows] == ["a", "b", "c"]
    assert all(0.3 < r["dice"] < 1.0 and r["hd"] > r["hd95"] > 0 for r in rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blobs_equal_monai(seed: int) -> None:
    shape = (36, 30, 20)
    gt = blob(shape, seed).astype(np.uint8)
    pred = blob(shape, seed + 50).astype(np.uint8)
    pred[blob(shape, seed + 99, 0.05)] = 2
    gt[blob(shape, seed + 77, 0.05)] = 2
    spacing = (0.7, 1.1, 3.0)
    check_against_monai(pred, gt, ["background", "x", "y"], spacing=spacing, tol=1.5)


def test_organ_metrics_equals_case_metrics_and_crops() -> None:
    shape = (64, 60, 30)
    gt = ellipsoid(shape, (20, 30, 15), (8, 9, 20))
    pred = ellipsoid(shape, (21, 29, 14), (9, 8, 18))
    row = case_metrics(pred.astype(np.uint8), gt.astype(np.uint8), SPACING, ["background", "o"])[0]
    single = organ_metrics(pred, gt, SPACING)
    assert set(single) == set(METRIC_KEYS) | set(FLAG_KEYS)
    for k in single:
        assert single[k] == pytest.approx(row[k], rel=1e-12)


def test_distance_transform_runs_on_the_bounding_box_only(monkeypatch: pytest.MonkeyPatch) -> None:
    shapes: list[tuple[int, ...]] = []
    real = surface.ndimage.distance_transform_edt

    def spy(arr, *args, **kwargs):
        shapes.append(arr.shape)
        return real(arr, *args, **kwargs)

    monkeypatch.setattr(surface.ndimage, "distance_transform_edt", spy)
    shape = (120, 110, 40)
    gt = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    gt[50:60, 40:52, 10:16] = True
    pred[52:63, 41:50, 11:18] = True
    organ_metrics(pred, gt, SPACING)
    # union box 50:63 x 40:52 x 10:18 plus one voxel on each side
    assert shapes == [(15, 14, 10), (15, 14, 10)]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.0)])
def test_offset_spheres_hausdorff_is_the_offset(spacing) -> None:
    r, k = 12.0, 5.0  # mm
    shape = tuple(int(60 / s) for s in spacing)
    centre = np.array(shape) / 2.0
    gt = ellipsoid(shape, centre, (r, r, r), spacing)
    pred = ellipsoid(shape, centre + np.array([0, 0, k / spacing[2]]), (r, r, r), spacing)
    m = organ_metrics(pred, gt, spacing)
    assert abs(m["hd"] - k) <= max(spacing)
    assert m["hd95"] <= m["hd"] + 1e-9


def test_identical_masks() -> None:
    shape = (30, 30, 16)
    gt = ellipsoid(shape, (15, 15, 8), (9, 11, 14))
    m = organ_metrics(gt, gt.copy(), SPACING)
    assert m["dice"] == 1.0 and m["iou"] == 1.0 and m["surface_dice"] == 1.0 and m["rvd"] == 0.0
    assert m["hd"] == m["hd95"] == m["assd"] == m["avg_hd"] == 0.0
    assert m["empty_gt"] == m["empty_pred"] == 0.0


def test_rvd_of_sphere_radius_r_versus_2r_is_7() -> None:
    spacing = (1.0, 1.0, 1.5)
    shape = (70, 70, 48)
    centre = np.array(shape) / 2.0
    gt = ellipsoid(shape, centre, (12, 12, 12), spacing)
    pred = ellipsoid(shape, centre, (24, 24, 24), spacing)
    m = organ_metrics(pred, gt, spacing)
    assert m["rvd"] == pytest.approx(7.0, rel=0.05)
    assert m["vol_gt_ml"] == pytest.approx(4 / 3 * math.pi * 12**3 / 1000, rel=0.05)
    # concentric spheres: every surface distance is about r
    assert m["hd"] == pytest.approx(12.0, abs=1.5)


def test_volume_of_a_box_in_ml() -> None:
    spacing = (0.5, 0.8, 2.5)  # 1 mm^3 per voxel
    gt = np.zeros((40, 40, 20), bool)
    gt[5:25, 10:35, 2:6] = True  # 20 * 25 * 4 = 2000 voxels = 2 ml
    pred = np.zeros_like(gt)
    pred[5:25, 10:35, 2:8] = True  # 3 ml
    m = organ_metrics(pred, gt, spacing)
    assert m["vol_gt_ml"] == pytest.approx(2.0, rel=1e-12)
    assert m["vol_pred_ml"] == pytest.approx(3.0, rel=1e-12)
    assert m["rvd"] == pytest.approx(0.5, rel=1e-12)
    assert m["dice"] == pytest.approx(2 * 2 / 5, rel=1e-12)
    assert m["iou"] == pytest.approx(2 / 3, rel=1e-12)
    # the extra 2 slices are 5 mm thick: the far face is 5 mm from the ground truth
    assert m["hd"] == pytest.approx(5.0, rel=1e-12)


def test_both_empty_convention() -> None:
    empty = np.zeros((10, 10, 5), bool)
    m = organ_metrics(empty, empty, SPACING)
    assert m["dice"] == m["iou"] == m["surface_dice"] == 1.0
    assert m["hd"] == m["hd95"] == m["assd"] == m["avg_hd"] == m["rvd"] == 0.0
    assert m["vol_pred_ml"] == m["vol_gt_ml"] == 0.0
    assert m["empty_gt"] == m["empty_pred"] == 1.0


def test_empty_prediction_convention_matches_monai() -> None:
    shape = (20, 20, 10)
    gt = ellipsoid(shape, (10, 10, 5), (6, 6, 8)).astype(np.uint8)
    pred = np.zeros(shape, np.uint8)
    m = organ_metrics(pred, gt, SPACING)
    assert m["dice"] == m["iou"] == m["surface_dice"] == 0.0
    assert all(math.isinf(m[k]) and m[k] > 0 for k in ("hd", "hd95", "assd", "avg_hd"))
    assert m["rvd"] == -1.0 and m["empty_pred"] == 1.0 and m["empty_gt"] == 0.0
    ref = monai_reference(pred, gt, 2, SPACING, 2.0)  # MONAI: 0 overlap, infinite distances
    for k in ("dice", "hd", "assd", "surface_dice"):
        assert ref[k][0] == m[k], k
    assert math.isnan(ref["hd95"][0])  # MONAI interpolates between infinities; we report +inf (docs/METRICS.md)


def test_empty_ground_truth_convention() -> None:
    shape = (20, 20, 10)
    pred = ellipsoid(shape, (10, 10, 5), (6, 6, 8))
    m = organ_metrics(pred, np.zeros(shape, bool), SPACING)
    assert m["dice"] == m["iou"] == m["surface_dice"] == 0.0
    assert all(math.isinf(m[k]) for k in ("hd", "hd95", "assd", "avg_hd", "rvd"))
    assert m["empty_gt"] == 1.0 and m["empty_pred"] == 0.0
    ref = monai_reference(pred.astype(np.uint8), np.zeros(shape, np.uint8), 2, SPACING, 2.0)
    for k in ("dice", "hd", "assd", "surface_dice"):
        assert ref[k][0] == m[k], k


def test_classes_present_skips_uncontoured_organs_and_unknown_labels_fail() -> None:
    shape = (20, 20, 10)
    gt = np.zeros(shape, np.uint8)
    gt[2:8, 2:8, 2:5] = 1
    gt[10:15, 10:15, 3:7] = 3
    pred = gt.copy()
    pred[12:14, 2:5, 1:3] = 2  # a prediction of organ 2, which was not contoured
    names = ["background", "a", "b", "c"]
    rows = case_metrics(pred, gt, SPACING, names, classes_present={1, 3}, case_id="case7")
    assert [(r["case"], r["organ"]) for r in rows] == [("case7", "a"), ("case7", "c")]
    assert all(r["dice"] == 1.0 for r in rows)
    rows = case_metrics(pred, gt, SPACING, names)
    assert rows[1]["organ"] == "b" and rows[1]["empty_gt"] == 1.0 and math.isinf(rows[1]["hd"])
    assert labels_present(pred) == {1, 2, 3}
    with pytest.raises(DataError, match=r"label\(s\) \[3\] but only 2 organ names"):
        case_metrics(pred, gt, SPACING, names[:3])


def test_bad_inputs_raise_data_error() -> None:
    a = np.zeros((5, 5, 5), bool)
    with pytest.raises(DataError, match="one shape"):
        organ_metrics(a, np.zeros((5, 5, 4), bool), SPACING)
    with pytest.raises(DataError, match="spacing"):
        organ_metrics(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(DataError, match="tolerance"):
        organ_metrics(a, a, SPACING, tolerance_mm=-1)
    with pytest.raises(DataError, match="integer labels"):
        case_metrics(np.full((5, 5, 5), 0.5), np.zeros((5, 5, 5)), SPACING, ["background", "a"])
