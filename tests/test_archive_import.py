"""``rtseg convert dicom-dataset`` on a generated clinic export, then ``rtseg train -c`` on what it wrote."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from skimage.draw import polygon

from archive_export import CLASSES, SetSpec, phantom, standard_sets, write_ct, write_rtplan, write_structure_set, other_scan
from rtseg.cli.main import main
from rtseg.io.dicom.series import write_dicom_series
from rtseg.io.rtstruct.structure_sets import SetHeader, ranked

PATIENTS = ("P1", "P2", "P3", "P4", "P5")


def _export(root: Path) -> dict[str, dict]:
    """Six patients as a clinic exports them; returns per patient what the converter must find."""
    truth: dict[str, dict] = {}
    # P1: nested folders, physician's set approved -> its (smaller) bladder wins although older
    ct, lab = phantom(11)
    s = write_ct(ct, root / "P1" / "2024" / "CT", "one")
    plan, md = standard_sets(planning_newer=True)
    md = SetSpec(md.organs, md.label, "APPROVED", md.date, md.time, md.helpers, md.variant)
    write_structure_set(plan, lab, ct.array, s, root / "P1" / "2024" / "RS" / "planning.dcm")
    write_structure_set(md, lab, ct.array, s, root / "P1" / "2024" / "RS" / "physician.dcm")
    truth["P1"] = {"labels": lab, "bladder_from": "Physician", "rs": [root / "P1/2024/RS/planning.dcm", root / "P1/2024/RS/physician.dcm"]}
    # P2: files without extension, an MR series and an RTPLAN beside the CT; none approved -> the newer set's bladder
    ct, lab = phantom(12)
    s = write_ct(ct, root / "P2" / "ct", "two", no_extension=True)
    plan, md = standard_sets(planning_newer=True)
    write_structure_set(plan, lab, ct.array, s, root / "P2" / "RS1")
    write_structure_set(md, lab, ct.array, s, root / "P2" / "RS2")
    write_dicom_series(ct, root / "P2" / "mr", modality="MR", patient_id="PID-two")
    write_rtplan(root / "P2" / "RP.dcm", s)
    truth["P2"] = {"labels": lab, "bladder_from": "Planning", "rs": [root / "P2/RS1", root / "P2/RS2"]}
    # P3: contoured in part (bladder and rectum only)
    ct, lab = phantom(13)
    s = write_ct(ct, root / "P3" / "CT", "three")
    write_structure_set(SetSpec({"bladder": "BLADDER", "rectum": "Rectum"}, "Partial", helpers=("BODY",)), lab, ct.array, s,
                        root / "P3" / "RS.dcm")
    truth["P3"] = {"labels": np.where(np.isin(lab, [2, 3]), lab, 0), "organs": ["bladder", "rectum"], "rs": [root / "P3/RS.dcm"]}
    # P4: its only RTSTRUCT was drawn on another scan
    ct, lab = phantom(14)
    write_ct(ct, root / "P4" / "CT", "four")
    write_structure_set(standard_sets()[1], lab, ct.array, other_scan(ct, "four"), root / "P4" / "RS.dcm")
    # P5: one set with clinic spellings and look-alikes; the other organs in a second set (split organs)
    ct, lab = phantom(15)
    s = write_ct(ct, root / "P5" / "CT", "five")
    write_structure_set(SetSpec({"prostate": "Prostata", "rectum": "RECTUM"}, "A", helpers=("PTV70", "Rectum_PRV", "Rectum_old")),
                        lab, ct.array, s, root / "P5" / "a.dcm")
    write_structure_set(SetSpec({"bladder": "Urinary Bladder", "femoral_head_left": "Femur_Head_L", "femoral_head_right": "Femur_Head_R"},
                                "B", helpers=("Bladder_PRV", "z_ring")), lab, ct.array, s, root / "P5" / "b.dcm")
    truth["P5"] = {"labels": lab, "rs": [root / "P5/a.dcm", root / "P5/b.dcm"]}
    (root / "DICOMDIR").write_bytes(b"\0" * 200)  # an index next to the files (they are scanned directly)
    return truth


def _independent(rs_paths: list[Path], affine: np.ndarray, shape: tuple, roi_name: str) -> np.ndarray:
    """The ROI filled with skimage.draw.polygon from the raw ContourData (independent of rtseg's rasteriser)."""
    inv = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine)  # LPS mm -> voxel
    mask = np.zeros(shape, bool)
    for p in rs_paths:
        ds = pydicom.dcmread(p)
        numbers = [r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == roi_name]
        for rc in ds.ROIContourSequence:
            if rc.ReferencedROINumber not in numbers:
                continue
            for c in rc.ContourSequence:
                pts = np.asarray(c.ContourData, float).reshape(-1, 3)
                vox = pts @ inv[:3, :3].T + inv[:3, 3]
                k = int(round(vox[:, 2].mean()))
                rr, cc = polygon(vox[:, 0], vox[:, 1], shape[:2])
                mask[rr, cc, k] ^= True
    return mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    truth = _export(root)
    out = tmp_path_factory.mktemp("dataset")
    rc = main(["convert", "dicom-dataset", "--input", str(root), "--out", str(out), "--classes", *CLASSES[1:]])
    return root, out, truth, rc


def test_export_converts_as_a_user_expects(converted, capsys) -> None:
    root, out, truth, rc = converted
    assert rc == 1  # P4 failed
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["converted"] == ["P1", "P2", "P3", "P5"]
    assert [f[0] for f in report["failed"]] == ["P4"] and "drawn on another scan" in report["failed"][0][1]
    assert len(report["refused_structure_sets"]) == 1 and "P4" in report["refused_structure_sets"][0][0]
    assert report["ignored"] == {"MR": 20, "RTPLAN": 1} and report["dicomdir"]
    table = json.loads((out / "rtseg_dataset.json").read_text())
    for case in ("P1", "P2", "P5"):
        assert table["cases"][case] == CLASSES[1:]
    assert table["cases"]["P3"] == truth["P3"]["organs"]
    assert sorted(c for ids in table["splits"].values() for c in ids) == ["P1", "P2", "P3", "P5"]
    assert table["details"]["P1"]["organs"]["bladder"]["structure_set"]["label"] == truth["P1"]["bladder_from"]
    assert table["details"]["P2"]["organs"]["bladder"]["structure_set"]["label"] == truth["P2"]["bladder_from"]
    assert table["details"]["P2"]["organs"]["bladder"]["also_in"][0]["roi_names"] == ["Urinary Bladder"]
    assert table["details"]["P5"]["organs"]["prostate"]["roi_names"] == ["Prostata"]
    text = (out / "rtseg_dataset.json").read_text() + (out / "conversion_report.json").read_text()
    assert "PID-" not in text and "Doe" not in text
    for case in ("P1", "P2", "P3", "P5"):
        img = nib.load(out / f"{case}_labels.nii.gz")
        lab = np.asarray(img.dataobj)
        src = truth[case]["labels"].copy()
        if truth[case].get("bladder_from") == "Physician":  # the physician drew the bladder one voxel smaller
            from archive_export import organ_mask
            src[(src == 2) & ~organ_mask(truth[case]["labels"], "bladder", "eroded")] = 0
        for k, organ in enumerate(CLASSES[1:], start=1):
            assert np.array_equal(lab == k, src == k), (case, organ)
            if organ not in table["cases"][case]:
                continue
            entry = table["details"][case]["organs"][organ]
            rs = [p for p in truth[case]["rs"] if pydicom.dcmread(p).SOPInstanceUID == entry["structure_set"]["sop_instance_uid"]]
            ref = _independent(rs, img.affine, lab.shape, entry["roi_names"][0])
            assert _dice(lab == k, ref) >= 0.99, (case, organ)


def test_name_report_lists_every_name(converted) -> None:
    _, out, _, _ = converted
    rows = {r["name"]: r for r in json.loads((out / "roi_name_report.json").read_text())["names"]}
    assert rows["Prostata"]["class"] == "prostate" and rows["Fem Head L"]["class"] == "femoral_head_left"
    for helper in ("PTV70", "z_ring", "BODY", "Rectum_PRV", "Bladder_PRV"):
        assert rows[helper]["class"] is None and rows[helper]["helper"], helper
    assert rows["Rectum_old"]["closest"][0]["class"] == "rectum" and not rows["Rectum_old"]["helper"]
    report = json.loads((out / "roi_name_report.json").read_text())
    assert report["suggested_aliases"] == {"rectum": ["Rectum_old"]}


def test_rerun_skips_unchanged_cases_and_reconverts_changed(converted, tmp_path, capsys) -> None:
    root, out, _, _ = converted
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    before = {p.name: p.stat().st_mtime_ns for p in copy.glob("*.nii.gz")}
    (copy / ".rtseg" / "cases" / "P3.json").unlink()  # as if interrupted before P3 was committed
    assert main(["convert", "dicom-dataset", "--input", str(root), "--out", str(copy), "--workers", "1", "--no-curation",
                 "--classes", *CLASSES[1:]]) == 1
    report = json.loads((copy / "conversion_report.json").read_text())
    assert report["skipped"] == ["P1", "P2", "P5"] and report["converted"] == ["P3"]
    after = {p.name: p.stat().st_mtime_ns for p in copy.glob("*.nii.gz")}
    assert all(after[n] == before[n] for n in before if not n.startswith("P3"))
    assert after["P3_ct.nii.gz"] != before["P3_ct.nii.gz"]


def test_rule_approved_then_newest_then_uid() -> None:
    a = SetHeader("1.2.3", "a", "UNAPPROVED", "20240110", "080000")
    b = SetHeader("1.2.4", "b", "APPROVED", "20230101", "")
    c = SetHeader("1.2.5", "c", "", "20240110", "09:00:00")
    d = SetHeader("1.2.1", "d", "", "", "")
    e = SetHeader("1.2.0", "e", "UNAPPROVED", "20240110", "090000")
    order = [h.label for h, _ in ranked([(x, None) for x in (a, b, c, d, e)])]  # type: ignore[misc]
    assert order == ["b", "e", "c", "a", "d"]


def test_generated_config_trains(converted, tmp_path) -> None:
    _, out, _, _ = converted
    rc = main(["train", "-c", str(out / "rtseg_train.yml"), "--set", "TRAINING.ITER_MAX=2", "--set", "TRAINING.VAL_INTERVAL=2",
               "--set", "CUDA=false", "--set", "MODEL.BASE_FILTERS=4", "--set", "TRAINING.PRINT_INTERVAL=1",
               "--run-dir", str(tmp_path / "run")])
    assert rc == 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
