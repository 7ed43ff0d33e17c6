"""The compressed and Enhanced CT series through the commands: ``rtseg predict``, ``rtseg convert dicom-to-nifti``
and ``rtseg convert dicom-dataset`` give what the uncompressed series gives (the node: tests/test_serve.py)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from dicom_checks import assert_dciodvfy_clean
from dicom_syntaxes import ENHANCED, LOSSLESS, SyntaxSet
from predict_helpers import make_checkpoint
from rtseg.cli.main import main
from rtseg.inference.pipeline import PredictOptions, predict_path
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.rtstruct import read_rtstruct, write_rtstruct

ALL = tuple(v.name for v in LOSSLESS) + ENHANCED


def _nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


@pytest.mark.parametrize("name", ["jpeg-lossless-sv1", "jpeg-lossless-p14", ENHANCED[0]])
def test_convert_dicom_to_nifti_equals_the_uncompressed_series(syntax_set: SyntaxSet, name: str, tmp_path: Path) -> None:
    ref, out = tmp_path / "ref.nii.gz", tmp_path / "got.nii.gz"
    assert main(["convert", "dicom-to-nifti", "--series", str(syntax_set.uncompressed), "--out", str(ref)]) == 0
    assert main(["convert", "dicom-to-nifti", "--series", str(syntax_set.folder(name)), "--out", str(out)]) == 0
    (a, aff_a), (b, aff_b) = _nifti(ref), _nifti(out)
    np.testing.assert_array_equal(b, a)
    np.testing.assert_allclose(aff_b, aff_a, atol=1e-5)


@pytest.mark.slow
def test_predict_contours_every_syntax_like_the_uncompressed_series(syntax_set: SyntaxSet, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "c.pt", target_spacing=(4.0, 4.0, 4.0), patch=(32, 32, 16))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("uncompressed",) + ALL:
        (inputs / name).symlink_to(syntax_set.root / name, target_is_directory=True)
    report = predict_path(ckpt, inputs, tmp_path / "out", PredictOptions(("nifti", "rtstruct", "seg"), "cpu"))
    assert not report.failed
    ref, ref_affine = _nifti(tmp_path / "out" / "uncompressed_pred.nii.gz")
    assert len(np.unique(ref)) > 1
    for name in ALL:
        got, affine = _nifti(tmp_path / "out" / f"{name}_pred.nii.gz")
        np.testing.assert_array_equal(got, ref, err_msg=name)
        np.testing.assert_allclose(affine, ref_affine, atol=1e-5)
    for name in ENHANCED:
        for suffix in ("rtstruct", "seg"):
            assert_dciodvfy_clean(tmp_path / "out" / f"{name}_{suffix}.dcm")


def test_archive_import_of_compressed_and_enhanced_series(syntax_set: SyntaxSet, tmp_path: Path, caplog) -> None:
    """One patient folder per syntax, each CT with an RTSTRUCT drawn on it; one of them holds two ROIs of one name."""
    export, ref = tmp_path / "export", read_dicom_series(syntax_set.uncompressed)
    lab = np.zeros(ref.shape, np.uint8)
    lab[150:330, 200:360, 1:6] = 1
    lab[230:290, 120:200, 2:8] = 2
    names = ["background", "bladder", "rectum"]
    cases = ("jpeg-lossless-sv1", "jpeg-ls", "rle", ENHANCED[0], ENHANCED[1])
    for name in cases:
        shutil.copytree(syntax_set.folder(name), export / name / "CT")
        ct = read_dicom_series(export / name / "CT")
        rs = write_rtstruct(lab, ct, names, [(255, 0, 0), (0, 255, 0)], export / name / "RS.dcm", names=["Bladder", "Rectum"])
        if name == "rle":  # as another system exports it: the second ROI under the first one's name
            ds = pydicom.dcmread(rs)
            ds.StructureSetROISequence[1].ROIName = ds.RTROIObservationsSequence[1].ROIObservationLabel = "Bladder"
            ds.save_as(rs)
    out = tmp_path / "dataset"
    with caplog.at_level(logging.WARNING):
        rc = main(["convert", "dicom-dataset", "--input", str(export), "--out", str(out), "--classes", *names[1:],
                   "--workers", "1", "--no-curation"])
    assert rc == 0
    report = json.loads((out / "conversion_report.json").read_text())
    assert sorted(report["converted"]) == sorted(cases)
    for name in cases:
        ct, ct_affine = _nifti(out / f"{name}_ct.nii.gz")
        np.testing.assert_array_equal(ct, ref.array, err_msg=name)
        np.testing.assert_allclose(ct_affine, ref.affine, atol=1e-5)
        labels, _ = _nifti(out / f"{name}_labels.nii.gz")
        if name != "rle":
            np.testing.assert_array_equal(labels, lab, err_msg=name)
    # two ROIs named "Bladder" in one set: united into the bladder, said in a warning and the case's notes
    labels, _ = _nifti(out / "rle_labels.nii.gz")
    np.testing.assert_array_equal(labels, np.where(lab > 0, 1, 0))
    assert "bladder united from 2 ROIs" in report["notes"]["rle"] and "Bladder (ROI 2)" in report["notes"]["rle"]
    assert any("ROIs of the same name map to bladder" in r.getMessage() for r in caplog.records)
    table = json.loads((out / "rtseg_dataset.json").read_text())
    assert table["details"]["rle"]["organs"]["bladder"]["roi_numbers"] == [1, 2]
    assert len(read_rtstruct(export / "rle" / "RS.dcm").rois) == 2


def test_convert_dicom_dataset_without_any_ct_is_one_line_error(tmp_path: Path, capsys) -> None:
    from rtseg.io.dicom.write import write_dicom_series
    from rtseg.io.volume import Volume

    (tmp_path / "export" / "notes").mkdir(parents=True)
    (tmp_path / "export" / "notes" / "readme.txt").write_text("no images here")
    write_dicom_series(Volume(np.zeros((8, 8, 3), np.int16), np.eye(4)), tmp_path / "export" / "mr", modality="MR")
    out = tmp_path / "out"
    rc = main(["convert", "dicom-dataset", "--input", str(tmp_path / "export"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert str(tmp_path / "export") in err[0] and "no CT series found (3 DICOM file(s): 3 MR)" in err[0]
    assert not out.exists()
    (tmp_path / "empty").mkdir()
    assert main(["convert", "dicom-dataset", "--input", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no CT series found (no DICOM files)" in capsys.readouterr().err
