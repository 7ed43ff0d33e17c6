"""rtseg audit: pairing by referenced CT, edits.csv against independent computations, drift alarm, dashboard in Chromium."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from audit_data import MODEL, edit_set, make_case
from browser import open_page, require_browser
from dicom_checks import assert_dciodvfy_clean
from rtseg.audit.compare import COLUMNS, compare_folders
from rtseg.audit.drift import drift_states
from rtseg.audit.report import build_report
from rtseg.cli.main import main
from test_edits import monai_surface_dice

SHIFT_VOXELS = (0, 1, 2)  # bladder moved by this many voxels (4 mm each) in case i


def shifted(mask: np.ndarray, affine: np.ndarray, lps_x_mm: float) -> np.ndarray:
    """The mask moved by ``lps_x_mm`` along the patient's LPS x axis (whole voxels), computed on the array."""
    step = np.linalg.solve(affine[:3, :3], np.array([-lps_x_mm, 0.0, 0.0]))  # LPS x = -RAS x
    k = np.round(step).astype(int)
    assert np.allclose(step, k)
    out = np.zeros_like(mask)  # voxels moved out of the image are gone (as a contour moved off the grid)
    src = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(k, mask.shape))
    dst = tuple(slice(max(0, d), n - max(0, -d)) for d, n in zip(k, mask.shape))
    out[dst] = mask[src]
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("audit")
    cases = []
    for i, k in enumerate(SHIFT_VOXELS):
        series, labels, auto = make_case(root, f"p{i}", i + 3)
        edit_set(auto, root / "approved" / f"p{i}.dcm", shift_mm={"Bladder": 4.0 * k}, rename={"Rectum": "Rect"},
                 delete=["Femur_Head_L"] if i == 2 else [], date=f"2025010{i + 1}")
        cases.append((series, labels))
    # the clinic's set of case 1 also holds a PTV (no class knows it): not an edit of the model's output
    ds1 = pydicom.dcmread(root / "approved" / "p1.dcm")
    ds1.StructureSetROISequence[0].ROIName = "PTV_70"  # was Prostate: the auto Prostate is now 'deleted'
    ds1.save_as(root / "approved" / "p1.dcm", enforce_file_format=True)
    # an approved set of a CT series neither folder holds
    stray = pydicom.dcmread(root / "approved" / "p0.dcm")
    stray.SOPInstanceUID = stray.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    stray.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID = "1.2.3.999"
    stray.save_as(root / "approved" / "stray.dcm", enforce_file_format=True)
    # a fourth case whose approved set is drawn in another Frame of Reference: not measured, with the reason
    _, _, auto3 = make_case(root, "p3", 9)
    other = pydicom.dcmread(edit_set(auto3, root / "approved" / "p3.dcm"))
    frame = generate_uid()
    other.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = frame
    for roi in other.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = frame
    other.save_as(root / "approved" / "p3.dcm", enforce_file_format=True)
    for f in (root / "auto" / "p0" / "rtstruct.dcm", root / "approved" / "p2.dcm", root / "approved" / "stray.dcm"):
        assert_dciodvfy_clean(f)
    res = compare_folders(root / "auto", root / "approved", root / "out")
    return {"root": root, "cases": cases, "res": res}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_edits_csv_equals_independent_computation(study: dict) -> None:
    rows = _rows(study["root"] / "out" / "edits.csv")
    assert tuple(rows[0]) == COLUMNS
    for i, (series, labels) in enumerate(study["cases"]):
        uid = series.meta["dicom"]["series_instance_uid"]
        mine = {r["organ"]: r for r in rows if r["case"] == uid}
        expected_organs = {"Prostate", "Bladder", "Rectum", "Femur_Head_L", "Femur_Head_R"}
        assert set(mine) == expected_organs
        auto = labels == 2
        approved = shifted(auto, series.affine, 4.0 * SHIFT_VOXELS[i])
        b = mine["Bladder"]
        if SHIFT_VOXELS[i] == 0:
            assert b["status"] == "unchanged" and float(b["dice"]) == 1.0
        else:
            assert b["status"] == "edited"
            dice = 2 * (auto & approved).sum() / (auto.sum() + approved.sum())
            assert float(b["dice"]) == pytest.approx(dice, abs=1e-5)
            assert float(b["surface_dice_2mm"]) == pytest.approx(
                monai_surface_dice(auto, approved, series.spacing, 2.0), abs=1e-5)
            assert float(b["volume_ratio"]) == pytest.approx(1.0)  # a move, not a resize
            assert float(b["apl_mm"]) > 0 and float(b["hd95_mm"]) <= 4.0 * SHIFT_VOXELS[i] + 1e-6
        for organ in ("Rectum", "Femur_Head_R") + (("Prostate",) if i != 1 else ()):
            assert mine[organ]["status"] == "unchanged" and float(mine[organ]["dice"]) == 1.0
            assert float(mine[organ]["apl_mm"]) == 0.0
        # the renamed ROI is the same organ: measured, not deleted + added
        assert (mine["Rectum"]["auto_roi"], mine["Rectum"]["approved_roi"]) == ("Rectum", "Rect")
        assert mine["Femur_Head_L"]["status"] == ("deleted" if i == 2 else "unchanged")
        if i == 1:  # its ROI renamed to a PTV: the organ is gone, and the PTV is no organ of the model's
            assert mine["Prostate"]["status"] == "deleted" and mine["Prostate"]["approved_roi"] == ""
        assert mine["Bladder"]["model"] == MODEL and mine["Bladder"]["date"] == f"2025-01-0{i + 1} 10:00:00"


def test_unpaired_sets_are_reported(study: dict) -> None:
    pairing = json.loads((study["root"] / "out" / "pairing.json").read_text())
    assert len(pairing["cases"]) == 3
    assert [Path(u[0]).name for u in pairing["unmatched"]] == ["stray.dcm"]
    assert "1.2.3.999" in pairing["unmatched"][0][1]
    assert len(pairing["failed"]) == 1 and "Frame of Reference" in pairing["failed"][0][1]
    assert "drawn on another scan" in pairing["failed"][0][1]


def _series(values_by_case: list[float], organ: str) -> list[dict]:
    return [{"case": f"c{i:03d}", "organ": organ, "status": "edited", "date": f"2025-01-01 00:{i // 60:02d}:{i % 60:02d}",
             "surface_dice_2mm": v} for i, v in enumerate(values_by_case)]


def test_drift_alarm_fires_on_drift_and_not_on_a_stable_series() -> None:
    rng = np.random.default_rng(0)
    stable = np.clip(0.95 + 0.02 * rng.standard_normal(60), 0, 1)
    drifting = stable.copy()
    drifting[30:] -= np.linspace(0.0, 0.3, 30)  # edits growing on one organ (simulated)
    rows = _series(list(stable), "Bladder") + _series(list(drifting), "Rectum")
    states = {d.organ: d for d in drift_states(rows, window=10, margin=0.05)}
    assert not states["Bladder"].alarm and states["Rectum"].alarm
    assert states["Rectum"].current < states["Rectum"].baseline - 0.05
    # the alarm started after the drift did, and no stable stretch of the series ever raised it
    assert states["Rectum"].since > rows[30]["date"]
    assert not any(d.alarm for d in drift_states(rows[:30] + _series(list(drifting[:30]), "Rectum"), window=10))
    # a commissioning baseline given explicitly: a stable series well above it stays quiet
    assert not any(d.alarm for d in drift_states(rows[:60], window=10, baseline={"Bladder": 0.96}))
    few = drift_states(_series([0.1] * 5, "Prostate"), window=10)
    assert few[0].alarm is False and few[0].current is None


def test_report_dashboard_in_chromium(study: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_browser()
    assert main(["audit", "report", "--edits", str(study["root"] / "out"), "--out", str(tmp_path), "--window", "1"]) == 0
    out = capsys.readouterr().out
    assert "Bladder" in out and "DRIFT ALARM: Bladder" in out
    summary = {r["organ"]: r for r in _rows(tmp_path / "summary.csv")}
    assert summary["Bladder"]["edited"] == "2" and summary["Femur_Head_L"]["deleted"] == "1"
    assert float(summary["Prostate"]["dice"]) == 1.0
    with open_page(tmp_path / "dashboard.html") as (page, errors):
        assert "Drift alarm" in page.inner_text("#drift-status")
        assert page.locator("#summary tr").count() == 6
        assert page.locator("svg").count() == 5  # four box plots and the trend
        links = page.locator("#largest a")
        assert links.count() >= 1
        href = links.first.get_attribute("href")
        assert (tmp_path / href).resolve().is_file()
        page.goto((tmp_path / href).resolve().as_uri())
        page.wait_for_function("document.getElementById('view-gt-axial') && "
                               "document.getElementById('view-gt-axial').width > 0")
        assert "Bladder" in page.inner_text("#qa")
    assert not errors


def test_bad_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    assert main(["audit", "compare", "--auto", str(tmp_path / "a"), "--approved", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rtseg audit: error:") and "nope" in err and "\n" not in err
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["audit", "report", "--edits", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "not an edits CSV" in capsys.readouterr().err
