"""``rtseg convert``: single conversions and whole datasets, each with a bad patient that is skipped."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from rtseg.cli.main import main
from rtseg.labels import PELVIS_COLOR_MAP
from rtseg.errors import ConfigError
from rtseg.config.colors import parse_colors as parse_color_map
from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from dicom_checks import assert_dciodvfy_clean
from rtseg.io.rtstruct import rtstruct_to_labels, write_rtstruct
from rtseg.io.volume import Volume

NAME, PID = "Doe^Jane", "PID-98765"
CLASSES = ["background", "prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right", "couch"]
COLORS = [(0, 255, 255), (204, 0, 102), (255, 0, 0), (0, 255, 0), (0, 0, 255), (90, 90, 90)]
ROI_NAMES = ["Prostate", "Urinary Bladder", "RECTUM", "Femur_Head_L", "Femur_Head_R", "Couch"]


def _no_identity(*texts: str) -> None:
    for t in texts:
        assert NAME not in t and PID not in t and "Jane" not in t


def _ct(seed: int) -> Volume:
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])
    aff[:3, 3] = (30.0, 20.0, -50.0 + seed)
    arr = np.random.default_rng(seed).integers(-1000, 1000, size=(20, 16, 5)).astype(np.int16)
    return Volume(arr, aff)


def _patient(folder: Path, seed: int, rtstruct: bool = True) -> np.ndarray:
    write_dicom_series(_ct(seed), folder, patient_name=NAME, patient_id=PID)
    series = read_dicom_series(folder)
    labels = np.zeros(series.shape, np.uint8)
    labels[4 + seed:12, 3:10, 1:4] = 2
    labels[13:17, 9:14, 2:5] = 3
    labels[0:20, 15, 0:5] = 6  # a couch: in the RTSTRUCT, mapped to no default class
    if rtstruct:
        write_rtstruct(labels, series, CLASSES, COLORS, folder / "RS.dcm", names=ROI_NAMES)
        assert_dciodvfy_clean(folder / "RS.dcm")
    labels[labels == 6] = 0
    return labels


@pytest.fixture()
def dicom_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "dicom"
    expected = {"case_01": _patient(root / "case_01", 0), "case_02": _patient(root / "case_02", 1)}
    _patient(root / "case_03", 2, rtstruct=False)  # bad: no RTSTRUCT
    _patient(root / "case_04", 3)
    (root / "case_04" / "CT_0002.dcm").unlink()  # bad: a slice is missing
    return root, expected


def test_dicom_dataset_skips_bad_patients(dicom_root, tmp_path: Path, capsys, caplog) -> None:
    root, expected = dicom_root
    out = tmp_path / "nifti"
    rc = main(["convert", "dicom-dataset", "--input", str(root), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 1
    assert "converted 2 of 4 cases, 2 failed" in cap.out
    assert "case_03: " in cap.err and "no RTSTRUCT" in cap.err
    assert "case_04: " in cap.err and "slice is probably missing" in cap.err
    for case, labels in expected.items():
        ct = nib.load(out / f"{case}_ct.nii.gz")
        lab = nib.load(out / f"{case}_labels.nii.gz")
        series = read_dicom_series(root / case)
        np.testing.assert_array_equal(np.asarray(ct.dataobj), series.array)
        np.testing.assert_allclose(ct.affine, series.affine, atol=1e-4)
        assert lab.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(np.asarray(lab.dataobj), labels)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["conversion_report.json", ".rtseg", "curation", "roi_name_report.json", "roi_name_report.txt", "rtseg_dataset.json",
         "rtseg_train.yml"] + [f"{c}_{k}.nii.gz" for c in expected for k in ("ct", "labels")]
    )
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["converted"] == ["case_01", "case_02"]
    assert [f[0] for f in report["failed"]] == ["case_03", "case_04"]
    names = {r["name"]: r for r in json.loads((out / "roi_name_report.json").read_text())["names"]}
    assert names["Couch"]["class"] is None and names["Couch"]["helper"] and names["Couch"]["count"] == 2
    texts = [(out / n).read_text() for n in ("conversion_report.json", "rtseg_dataset.json", "roi_name_report.txt")]
    _no_identity(cap.out, cap.err, caplog.text, *texts)


def test_single_conversions_roundtrip(dicom_root, tmp_path: Path, capsys) -> None:
    root, expected = dicom_root
    case = root / "case_01"
    ct_out, lab_out, rs_out = tmp_path / "ct.nii.gz", tmp_path / "lab.nii.gz", tmp_path / "RS2.dcm"
    assert main(["convert", "dicom-to-nifti", "--series", str(case), "--out", str(ct_out)]) == 0
    assert main(["convert", "rtstruct-to-nifti", "--series", str(case), "--rtstruct", str(case / "RS.dcm"),
                 "--out", str(lab_out)]) == 0
    cap = capsys.readouterr()
    assert "not mapped: Couch" in cap.out
    np.testing.assert_array_equal(np.asarray(nib.load(lab_out).dataobj), expected["case_01"])
    assert main(["convert", "nifti-to-rtstruct", "--series", str(case), "--labels", str(lab_out), "--out", str(rs_out),
                 "--names", "Prost", "Blase", "Rektum", "FHL", "FHR"]) == 0
    assert_dciodvfy_clean(rs_out)
    back, report = rtstruct_to_labels(rs_out, read_dicom_series(case), ["background", "prostate", "bladder", "rectum"],
                                      aliases={"bladder": ["Blase"]})
    assert report.mapped == {"Blase": "bladder", "Rektum": "rectum"}
    np.testing.assert_array_equal(back.array, expected["case_01"])
    # --classes and --alias on the command line
    assert main(["convert", "rtstruct-to-nifti", "--series", str(case), "--rtstruct", str(rs_out), "--out", str(lab_out),
                 "--classes", "rectum", "bladder", "--alias", "bladder=Blase"]) == 0
    swapped = np.asarray(nib.load(lab_out).dataobj)
    np.testing.assert_array_equal(swapped == 2, expected["case_01"] == 2)  # bladder is now label 2
    np.testing.assert_array_equal(swapped == 1, expected["case_01"] == 3)  # rectum is now label 1
    _no_identity(capsys.readouterr().out)


def test_cli_errors_are_one_line(tmp_path: Path, dicom_root, capsys) -> None:
    root, _ = dicom_root
    cases = [
        ["convert", "dicom-to-nifti", "--series", str(tmp_path / "absent"), "--out", str(tmp_path / "x.nii.gz")],
        ["convert", "dicom-to-nifti", "--series", str(root / "case_01"), "--out", str(tmp_path / "x.nrrd")],
        ["convert", "dicom-to-nifti", "--series", str(root / "case_04"), "--out", str(tmp_path / "x.nii.gz")],
        ["convert", "rtstruct-to-nifti", "--series", str(root / "case_02"), "--rtstruct", str(root / "case_01" / "RS.dcm"),
         "--out", str(tmp_path / "x.nii.gz")],
        ["convert", "dicom-dataset", "--input", str(root), "--out", str(tmp_path / "o"), "--alias", "kidney=Niere"],
    ]
    for argv in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("rtseg convert: error: ") and err.count("\n") == 1, err
        _no_identity(err)
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ PNG --

def _png_case(folder: Path, with_mask: bool = True) -> None:
    """42x56-pixel slices img_8..img_12; a 14x14 square at rows 14..27, cols 21..34 on img_9..img_11."""
    (folder / "CT").mkdir(parents=True)
    if with_mask:
        (folder / "MASK").mkdir()
    for i in range(8, 13):
        ct = np.full((42, 56), 20, np.uint8)
        mask = np.zeros((42, 56, 3), np.uint8)
        if 9 <= i <= 11:
            ct[14:28, 21:35] = 200
            mask[14:28, 21:35] = PELVIS_COLOR_MAP[1]  # label 2 (bladder) in the seed's COLOR_MAP
            mask[14, 21] = (6, 248, 250)  # slightly off colour: still bladder
            mask[27, 34] = (90, 200, 30)  # far from any colour: reported, set to background
        Image.fromarray(ct).save(folder / "CT" / f"img_{i}.png")
        if with_mask:
            Image.fromarray(mask).save(folder / "MASK" / f"img_{i}.png")


def test_png_dataset_keeps_image_and_labels_aligned(tmp_path: Path, capsys) -> None:
    src, out = tmp_path / "png", tmp_path / "out"
    _png_case(src / "p1")
    _png_case(src / "p2", with_mask=False)
    rc = main(["convert", "png-dataset", "--input", str(src), "--out", str(out), "--size", "8", "6",
               "--slices", "9", "--spacing", "0.5", "0.5", "2"])
    cap = capsys.readouterr()
    assert rc == 1 and "p2: " in cap.err and "missing folder MASK/" in cap.err
    img = nib.load(out / "p1_ct.nii.gz")
    lab = nib.load(out / "p1_labels.nii.gz")
    image, labels = np.asarray(img.dataobj), np.asarray(lab.dataobj)
    assert image.shape == labels.shape == (8, 6, 9)
    np.testing.assert_allclose(img.affine, lab.affine)
    np.testing.assert_allclose(np.abs(np.diag(img.affine))[:3], [3.5, 3.5, 2.0])
    expected = np.zeros((8, 6, 9), bool)
    expected[3:5, 2:4, 3:6] = True  # cols 21..34 -> x 3..4, rows 14..27 -> y 2..3, slices img_9..11 -> 1..3, +2 padding
    np.testing.assert_array_equal(labels == 2, expected)
    assert set(np.unique(labels)) == {0, 2}
    bright = image > (image.max() + 20) / 2
    np.testing.assert_array_equal(bright, expected)
    assert "3 mask pixels matched no colour" in json.loads((out / "conversion_report.json").read_text())["notes"]["p1"]


def test_parse_color_map_sources(tmp_path: Path) -> None:
    assert parse_color_map("[[1, 2, 3], [4, 5, 6]]") == [(1, 2, 3), (4, 5, 6)]
    f = tmp_path / "colors.json"
    f.write_text(json.dumps({"COLOR_MAP": [[9, 8, 7]]}))
    assert parse_color_map(str(f)) == [(9, 8, 7)]
    cfg = tmp_path / "cfg.yml"
    cfg.write_text("DATASET:\n  PATH: data\n  N_CLASSES: 6\n  COLOR_MAP: " + json.dumps([list(c) for c in PELVIS_COLOR_MAP]) + "\n")
    assert parse_color_map(str(cfg)) == list(PELVIS_COLOR_MAP)
    for bad in ("[[1, 2]]", "[[1, 2, 300]]", "not json", str(tmp_path / "absent.json")):
        with pytest.raises(ConfigError):
            parse_color_map(bad)


# ----------------------------------------------------------------- seed --

def _nifti_pair(folder: Path, cid: str, affine: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ct = rng.integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)
    lab = rng.integers(0, 4, size=(6, 5, 4)).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(ct, affine), folder / f"{cid}_ct.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine), folder / f"{cid}_labels.nii.gz")


def _legacy_npy_order(path: Path) -> np.ndarray:
    """Independent reference: nibabel's RAS canonical form, flipped to LPS, as (D, H, W)."""
    ras = np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    return ras[::-1, ::-1, :].transpose(2, 1, 0)


def test_nifti_legacy_npy_roundtrip_with_bad_cases(tmp_path: Path, capsys) -> None:
    src, legacy, back = tmp_path / "nifti", tmp_path / "legacy_npy", tmp_path / "back"
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    lps = np.diag([-2.0, -2.0, 3.0, 1.0])
    odd = np.array([[0, 0, 3.0, 0], [-2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 1]])  # permuted axes
    _nifti_pair(src / "train", "c1", ras, 1)
    _nifti_pair(src / "train", "c2", odd, 2)
    _nifti_pair(src / "val", "c3", lps, 3)
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 4), np.int16), ras), src / "train" / "c9_ct.nii.gz")  # bad: no labels

    assert main(["convert", "nifti-to-legacy-npy", "--input", str(src), "--out", str(legacy)]) == 1
    cap = capsys.readouterr()
    assert "converted 3 of 4 cases, 1 failed" in cap.out and "train/c9: " in cap.err and "c9_labels.nii.gz" in cap.err
    for split, cid in (("train", "c1"), ("train", "c2"), ("val", "c3")):
        ct = np.load(legacy / split / "CT" / f"{cid}.npy")
        seg = np.load(legacy / split / "SEG" / f"{cid}.npy")
        onehot = np.load(legacy / split / "SEG_onehot" / f"{cid}.npy")
        np.testing.assert_array_equal(ct, _legacy_npy_order(src / split / f"{cid}_ct.nii.gz"))
        np.testing.assert_array_equal(seg, _legacy_npy_order(src / split / f"{cid}_labels.nii.gz"))
        assert onehot.shape == (4, *seg.shape)
        np.testing.assert_array_equal(onehot.argmax(0), seg)

    np.save(legacy / "train" / "CT" / "c7.npy", np.zeros((2, 2, 2)))  # bad: CT without SEG
    assert main(["convert", "legacy-npy-to-nifti", "--input", str(legacy), "--out", str(back), "--spacing", "2", "2", "3"]) == 1
    cap = capsys.readouterr()
    assert "train/c7: " in cap.err and "no matching SEG/c7.npy" in cap.err
    c1 = nib.load(back / "train" / "c1_ct.nii.gz")
    np.testing.assert_allclose(c1.affine, lps)
    canon = nib.as_closest_canonical(nib.load(src / "train" / "c1_ct.nii.gz"))
    np.testing.assert_array_equal(np.asarray(c1.dataobj), np.asarray(canon.dataobj)[::-1, ::-1, :])
    for split, cid in (("train", "c2"), ("val", "c3")):
        a = nib.load(back / split / f"{cid}_labels.nii.gz")
        b = nib.as_closest_canonical(nib.load(src / split / f"{cid}_labels.nii.gz"))
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)[::-1, ::-1, :])

    # a single split folder converts flat, and --no-onehot leaves SEG_onehot out
    flat = tmp_path / "flat"
    assert main(["convert", "nifti-to-legacy-npy", "--input", str(src / "val"), "--out", str(flat), "--no-onehot"]) == 0
    assert sorted(p.name for p in flat.iterdir()) == ["CT", "SEG", "conversion_report.json"]
