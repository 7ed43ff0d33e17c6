"""Nothing invalid, empty or unidentified leaves ``rtseg predict``: the DICOM check before every write, empty
predictions and 1-/2-slice series refused, NIfTI -> RTSTRUCT refused before the model is read, and the model's
SHA-256 in every output (compared with hashlib on the checkpoint file)."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_checks import assert_dciodvfy_clean
from gate_helpers import empty_checkpoint, pelvic_checkpoint, pelvis_series, thin_series
from predict_helpers import COLORS, NAMES
from rtseg import __version__
from rtseg.cli.main import main
from rtseg.errors import DataError
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.dicom.seg import write_seg
from rtseg.io.dicom.validate import rtstruct_problems, seg_problems
from rtseg.io.fingerprint import ModelIdentity
from rtseg.io.nifti import write_nifti
from rtseg.io.rtstruct.write import write_rtstruct
from rtseg.io.volume import Volume, affine_from_spacing


@pytest.fixture(scope="module")
def pelvic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pelvic_checkpoint(tmp_path_factory.mktemp("ckpt") / "pelvic_demo.pt")


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pelvis_series(tmp_path_factory.mktemp("series") / "pelvis")


def sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def predict(*args: str) -> int:
    return main(["predict", *args, "--device", "cpu"])


def test_every_output_names_the_model_hash_and_passes_dciodvfy(pelvic: Path, series: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert predict("--checkpoint", str(pelvic), "--input", str(series), "--output", str(out),
                   "--format", "rtstruct", "seg", "nifti") == 0
    h = sha12(pelvic)
    rt = pydicom.dcmread(out / "pelvis_rtstruct.dcm")
    assert {r.ROIGenerationDescription for r in rt.StructureSetROISequence} == {f"rtseg {__version__} sha256:{h} pelvic_demo.pt"}
    assert rt.StructureSetDescription.startswith("rtseg QA: ")
    seg = pydicom.dcmread(out / "pelvis_seg.dcm", stop_before_pixels=True)
    algorithms = {str(s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmVersion) for s in seg.SegmentSequence}
    assert algorithms == {f"{__version__} sha256:{h} pelvic_demo.pt"}
    qa = json.loads((out / "pelvis_qa.json").read_text())
    assert qa["model"] == {"checkpoint": "pelvic_demo.pt", "sha256": h}
    assert qa["gate"]["action"] in ("deliver", "deliver with flags") and qa["gate"]["policy"] == "clinical"
    row = next(csv.DictReader(open(out / "summary.csv")))
    assert row["model"] == f"pelvic_demo.pt sha256:{h}" and row["status"] == "ok"
    for p in (out / "pelvis_rtstruct.dcm", out / "pelvis_seg.dcm"):
        assert_dciodvfy_clean(p)


@pytest.mark.parametrize("n_slices", [1, 2])
def test_one_or_two_slice_series_fail_with_the_reason_and_write_nothing(pelvic: Path, tmp_path: Path, capsys,
                                                                         n_slices: int) -> None:
    src = tmp_path / "in"
    thin_series(src / "thin", n_slices)
    pelvis_series(src / "whole")
    out = tmp_path / "out"
    assert predict("--checkpoint", str(pelvic), "--input", str(src), "--output", str(out),
                   "--format", "rtstruct", "seg") == 1
    rows = {r["case"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["thin"]["status"] == "failed" and f"{n_slices} slice(s)" in rows["thin"]["error"]
    assert "at least 3 slices" in rows["thin"]["error"] and rows["whole"]["status"] == "ok"
    assert not list(out.rglob("thin*"))
    assert f"case thin failed: " in capsys.readouterr().err


def test_empty_prediction_fails_with_the_reason_and_writes_nothing(series: Path, tmp_path: Path, capsys) -> None:
    ckpt = empty_checkpoint(tmp_path / "empty.pt")
    out = tmp_path / "out"
    assert predict("--checkpoint", str(ckpt), "--input", str(series), "--output", str(out),
                   "--format", "nifti", "rtstruct") == 2  # the only case failed on its input: nothing written
    assert "the prediction holds no organ" in capsys.readouterr().err
    assert not out.exists()
    for fmt in ("rtstruct", "seg"):
        out2 = tmp_path / f"out_{fmt}"
        assert predict("--checkpoint", str(ckpt), "--input", str(series), "--output", str(out2),
                       "--format", fmt, "--no-qa") == 2
        assert not out2.exists()


def test_dicom_output_of_a_nifti_input_is_refused_before_the_model_is_read(tmp_path: Path, capsys) -> None:
    ct = write_nifti(Volume(np.zeros((8, 8, 8), np.int16), affine_from_spacing((1, 1, 1))), tmp_path / "ct.nii.gz")
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a checkpoint at all")  # reading it would be another error
    for fmt in ("rtstruct", "seg"):
        assert predict("--checkpoint", str(bogus), "--input", str(ct), "--output", str(tmp_path / "o"),
                       "--format", fmt) == 2
        err = capsys.readouterr().err
        assert f"--format {fmt}:" in err and "ct.nii.gz is a NIfTI file" in err and "checkpoint" not in err
    assert not (tmp_path / "o").exists()


def test_validator_finds_what_dciodvfy_finds(series: Path, tmp_path: Path) -> None:
    """Our check and dciodvfy agree on the same broken objects (Type 1 attributes missing or empty)."""
    ct = read_dicom_series(series)
    labels = np.zeros(ct.shape, np.uint8)
    labels[20:40, 20:40, 10:20] = 1
    model = ModelIdentity("m.pt", "ab" * 32)
    rt_path = write_rtstruct(labels, ct, NAMES, COLORS, tmp_path / "ok.dcm", model=model)
    seg_path = write_seg(labels, ct, NAMES, COLORS, tmp_path / "ok_seg.dcm", model=model)
    assert rtstruct_problems(pydicom.dcmread(rt_path)) == [] and seg_problems(pydicom.dcmread(seg_path)) == []
    breakages = {
        "StructureSetROISequence (Type 1) is empty": lambda d: setattr(d, "StructureSetROISequence", []),
        "RTROIObservationsSequence (Type 1) is empty": lambda d: setattr(d, "RTROIObservationsSequence", []),
        "StudyInstanceUID (Type 1) is empty": lambda d: setattr(d, "StudyInstanceUID", ""),
        "StructureSetLabel (Type 1) is missing": lambda d: delattr(d, "StructureSetLabel"),
        "ROINumber (Type 1) is missing": lambda d: delattr(d.StructureSetROISequence[0], "ROINumber"),
    }
    tool = shutil.which("dciodvfy")
    for words, brk in breakages.items():
        ds = pydicom.dcmread(rt_path)
        brk(ds)
        assert any(words in p for p in rtstruct_problems(ds)), words
        if tool:
            ds.save_as(tmp_path / "broken.dcm")
            res = subprocess.run([tool, str(tmp_path / "broken.dcm")], capture_output=True, text=True)
            assert any(ln.startswith("Error") for ln in (res.stdout + res.stderr).splitlines()), words
    ds = pydicom.dcmread(seg_path)
    ds.SegmentSequence = []
    assert any("SegmentSequence (Type 1) is empty" in p for p in seg_problems(ds))


def test_contour_checks_on_raw_bytes_equal_pydicoms(series: Path, tmp_path: Path, monkeypatch) -> None:
    """The fast ContourSequence check (element headers of the raw bytes) finds what the same rules find on
    pydicom Datasets, for each broken contour, and finds nothing in a good file."""
    from rtseg.io.dicom import validate

    ct = read_dicom_series(series)
    labels = np.zeros(ct.shape, np.uint8)
    labels[20:40, 20:40, 10:20] = 1
    labels[50:60, 50:58, 12:14] = 2
    good = write_rtstruct(labels, ct, NAMES, COLORS, tmp_path / "ok.dcm")
    breakages = {
        "ContourData (Type 1) is missing": lambda c: delattr(c, "ContourData"),
        "ContourGeometricType (Type 1) is empty": lambda c: setattr(c, "ContourGeometricType", ""),
        "values for 4 points": lambda c: setattr(c, "NumberOfContourPoints", 4),
        "values for 2 points": lambda c: (setattr(c, "ContourData", c.ContourData[:6]),
                                          setattr(c, "NumberOfContourPoints", 2)),
        "references a slice the structure set does not cite":
            lambda c: setattr(c.ContourImageSequence[0], "ReferencedSOPInstanceUID", "1.2.3.4"),
        "ReferencedSOPInstanceUID (Type 1) is missing": lambda c: delattr(c.ContourImageSequence[0],
                                                                          "ReferencedSOPInstanceUID"),
    }
    cases = {"": good}
    for i, (words, brk) in enumerate(breakages.items()):
        ds = pydicom.dcmread(good)
        brk(ds.ROIContourSequence[1].ContourSequence[0])
        cases[words] = tmp_path / f"broken{i}.dcm"
        ds.save_as(cases[words])
    raw_reader = validate._raw_contour_items
    for words, path in cases.items():
        ds = pydicom.dcmread(path)
        assert all(raw_reader(roi) is not None for roi in ds.ROIContourSequence), "the fast path was not taken"
        fast = rtstruct_problems(ds)
        monkeypatch.setattr(validate, "_raw_contour_items", lambda roi: None)
        slow = rtstruct_problems(pydicom.dcmread(path))
        monkeypatch.setattr(validate, "_raw_contour_items", raw_reader)
        assert sorted(set(fast)) == sorted(set(slow)), (words, fast, slow)
        assert (fast == []) == (words == "") and (words == "" or any(words in p for p in fast)), (words, fast)


def test_writers_refuse_empty_labels_and_thin_series(series: Path, tmp_path: Path) -> None:
    ct = read_dicom_series(series)
    for write in (write_rtstruct, write_seg):
        with pytest.raises(DataError, match="holds no organ"):
            write(np.zeros(ct.shape, np.uint8), ct, NAMES, COLORS, tmp_path / "x.dcm")
    thin = read_dicom_series(thin_series(tmp_path / "thin", 2))
    for write in (write_rtstruct, write_seg):
        with pytest.raises(DataError, match="2 slice"):
            write(np.ones(thin.shape, np.uint8), thin, NAMES, COLORS, tmp_path / "x.dcm")
    assert not [p for p in tmp_path.iterdir() if p.is_file()]  # no file, no temporary left


def test_model_identity_of_one_checkpoint_and_of_an_ensemble(tmp_path: Path) -> None:
    from rtseg.io.fingerprint import model_identity

    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    one = model_identity([a])
    assert one.name == "a.pt" and one.sha256 == hashlib.sha256(b"first").hexdigest() and one.short == one.sha256[:12]
    both = model_identity([a, b], "cv/ensemble.json")
    digests = "\n".join(hashlib.sha256(x).hexdigest() for x in (b"first", b"second"))
    assert both.name == "ensemble.json" and both.sha256 == hashlib.sha256(digests.encode()).hexdigest()
    long = ModelIdentity("x" * 100 + "\\y.pt", one.sha256)
    text = long.text(64, "rtseg 1.2.3 ")
    assert len(text) == 64 and text.startswith(f"rtseg 1.2.3 sha256:{one.short} x") and "\\" not in text
