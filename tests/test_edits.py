"""Edit measures (evaluation/edits.py): surface Dice equal to MONAI's, APL equal to hand counts on squares."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from rtseg.errors import DataError
from rtseg.evaluation.edits import added_path_length, case_edits, edit_keys, edit_measures
from test_surface_metrics import blob, ellipsoid


def monai_surface_dice(auto: np.ndarray, approved: np.ndarray, spacing, tol: float) -> float:
    p = torch.from_numpy(np.stack([~auto, auto])[None].astype(np.float32))
    g = torch.from_numpy(np.stack([~approved, approved])[None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(compute_surface_dice(p, g, [tol], include_background=False, spacing=list(spacing)).reshape(-1)[0])


def monai_hd95(auto: np.ndarray, approved: np.ndarray, spacing) -> float:
    p = torch.from_numpy(np.stack([~auto, auto])[None].astype(np.float32))
    g = torch.from_numpy(np.stack([~approved, approved])[None].astype(np.float32))
    return float(compute_hausdorff_distance(p, g, include_background=False, percentile=95, spacing=list(spacing)).reshape(-1)[0])


@pytest.mark.parametrize("seed", [0, 1])
def test_surface_dice_and_hd95_equal_monai(seed: int) -> None:
    shape, spacing = (40, 36, 18), (0.8, 1.2, 2.5)
    auto = blob(shape, seed, 0.12)
    approved = auto.copy()
    approved |= ellipsoid(shape, (20 + seed, 18, 9), (6, 5, 8), spacing)  # a physician adds a bulge
    approved[:, :4] = False  # and cuts a part away
    row = edit_measures(auto, approved, spacing)
    for t in (1.0, 2.0, 3.0):
        assert row[f"surface_dice_{t:g}mm"] == pytest.approx(monai_surface_dice(auto, approved, spacing, t), rel=1e-6)
    assert row["hd95_mm"] == pytest.approx(monai_hd95(auto, approved, spacing), rel=1e-6)
    assert row["dice"] == pytest.approx(2 * (auto & approved).sum() / (auto.sum() + approved.sum()), rel=1e-12)
    assert row["volume_ratio"] == pytest.approx(approved.sum() / auto.sum(), rel=1e-12)
    assert row["status"] == "edited" and 0 < row["surface_dice_1mm"] < row["surface_dice_3mm"] < 1


def square(shape, rows: int, cols: int, slices=None) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[5:5 + rows, 5:5 + cols, slices if slices is not None else slice(None)] = True
    return m


@pytest.mark.parametrize("s,k", [(10, 1), (12, 3), (9, 5)])
@pytest.mark.parametrize("px", [1.0, 0.75])
def test_apl_of_a_square_with_one_side_moved_out(s: int, k: int, px: float) -> None:
    """Square s x s; the approved one has one side moved k pixels out. Boundary pixels (4-connected erosion) of
    the approved s+k by s rectangle not on the auto boundary: the new side (s) and k-1 pixels on each of the two
    sides that grew; the j-th of those lies j pixels from the auto boundary, the new side k pixels."""
    shape, spacing = (40, 40, 3), (px, px, 3.0)
    auto, approved = square(shape, s, s), square(shape, s + k, s)
    apl, length = added_path_length(auto, approved, spacing)
    assert apl == pytest.approx(3 * (s + 2 * k - 2) * px)
    assert length == pytest.approx(3 * (2 * s + 2 * (s + k - 2)) * px)  # the approved rectangle's boundary pixels
    for tol_px in range(0, k + 1):  # with a tolerance only pixels farther than it count
        expected = (s if k > tol_px else 0) + 2 * sum(1 for j in range(1, k) if j > tol_px)
        assert added_path_length(auto, approved, spacing, tol_px * px + 1e-9)[0] == pytest.approx(3 * expected * px)
    row = edit_measures(auto, approved, spacing)
    assert row["apl_mm"] == pytest.approx(apl) and row["apl_pct"] == pytest.approx(100 * apl / length)


def test_apl_of_a_side_moved_in_counts_the_new_side_only_and_deletion_counts_nothing() -> None:
    shape, spacing, s, k = (40, 40, 4), (1.0, 1.0, 2.0), 14, 4
    auto, approved = square(shape, s, s), square(shape, s - k, s)
    # the new side's two end pixels lie on the auto square's unchanged sides: s - 2 pixels per slice were drawn
    assert added_path_length(auto, approved, spacing)[0] == pytest.approx(4 * (s - 2))
    # one slice removed from the approved set: nothing drawn there, nothing added elsewhere
    cut = auto.copy()
    cut[:, :, 0] = False
    assert added_path_length(auto, cut, spacing)[0] == 0.0
    # one slice added where auto had none: its whole boundary counts
    auto2 = square(shape, s, s, slice(1, 4))
    assert added_path_length(auto2, auto, spacing)[0] == pytest.approx(2 * s + 2 * (s - 2))


def test_statuses_and_empty_conventions() -> None:
    shape, spacing = (20, 20, 4), (1.0, 1.0, 2.0)
    a = square(shape, 6, 6)
    empty = np.zeros(shape, bool)
    same = edit_measures(a, a.copy(), spacing)
    assert same["status"] == "unchanged" and same["dice"] == 1.0 and same["apl_mm"] == 0.0 and same["hd95_mm"] == 0.0
    assert same["surface_dice_1mm"] == 1.0 and same["volume_ratio"] == 1.0
    deleted = edit_measures(a, empty, spacing)
    assert deleted["status"] == "deleted" and deleted["dice"] == 0.0 and deleted["apl_mm"] == 0.0
    assert deleted["volume_ratio"] == 0.0 and deleted["hd95_mm"] == float("inf")
    added = edit_measures(empty, a, spacing)
    assert added["status"] == "added" and added["volume_ratio"] == float("inf")
    assert added["apl_mm"] == pytest.approx(4 * (2 * 6 + 2 * 4)) and added["apl_pct"] == pytest.approx(100.0)
    assert set(same) == {"status", *edit_keys()}


def test_case_edits_rows_per_organ_held() -> None:
    shape, spacing = (30, 30, 3), (1.0, 1.0, 2.0)
    auto = np.zeros(shape, np.uint8)
    approved = np.zeros(shape, np.uint8)
    auto[square(shape, 5, 5)] = 1
    approved[square(shape, 5, 5)] = 1
    auto[15:20, 15:20] = 2  # deleted by the physician
    approved[2:4, 20:28] = 3  # added
    rows = case_edits(auto, approved, spacing, ["Bladder", "Rectum", "Prostate", "Femur_Head_L"])
    assert [(r["organ"], r["status"]) for r in rows] == [("Bladder", "unchanged"), ("Rectum", "deleted"),
                                                        ("Prostate", "added")]


def test_bad_spacing_is_a_data_error() -> None:
    with pytest.raises(DataError, match="spacing"):
        added_path_length(np.ones((3, 3, 3), bool), np.ones((3, 3, 3), bool), (1.0, 0.0, 1.0))
