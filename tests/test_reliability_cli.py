"""Bad volumes through the command line (``python -m rtseg``): NaN voxels and unknown geometry give one clear
error line, a non-zero exit and no output file, in predict, convert and evaluate."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_predict import make_checkpoint, phantom
from test_reliability_inputs import save_nifti, set_raw

from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume, affine_from_spacing

ROOT = Path(__file__).resolve().parents[1]
AFFINE = affine_from_spacing((2.0, 2.0, 2.0))


def rtseg(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rtseg", *args], capture_output=True, text=True, env=env, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"rtseg {command}")]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    return lines[0]


def nan_ct(path: Path) -> Path:
    arr = phantom((24, 20, 16)).astype(np.float32)
    arr[3, 4, 5] = np.nan
    return save_nifti(path, arr, AFFINE)


def unknown_geometry_ct(path: Path) -> Path:
    """The report's case: pixdim 0 and no qform/sform (nibabel would read it on a 1 mm grid)."""
    def no_geometry(hdr):
        hdr["qform_code"], hdr["sform_code"] = 0, 0
        hdr["pixdim"][1:4] = 0

    return save_nifti(path, phantom((24, 20, 16)), AFFINE, edit=no_geometry)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.mark.parametrize("make, expected", [
    (nan_ct, r"1 of 7680 voxels are NaN or infinite (first at voxel (3, 4, 5): nan)"),
    (unknown_geometry_ct, "header has qform_code = 0 and sform_code = 0"),
])
def test_predict_refuses_nan_and_unknown_geometry(tmp_path, ckpt, make, expected):
    src = make(tmp_path / "p01_ct.nii.gz")
    out = tmp_path / "out"
    proc = rtseg("predict", "--checkpoint", str(ckpt), "--input", str(src), "--output", str(out))
    line = one_error_line(proc, "predict")
    # every case (here the only one) failed on bad input: a user error, exit 2, nothing written
    assert proc.returncode == 2 and str(src) in line and expected in line
    assert not out.exists()


def test_convert_dicom_to_nifti_refuses_overflowing_hounsfield_units(tmp_path):
    write_dicom_series(Volume(phantom((12, 10, 4)), AFFINE), tmp_path / "ct")
    bad = sorted((tmp_path / "ct").glob("*.dcm"))[2]
    set_raw(bad, "RescaleSlope", b"1e38")
    out = tmp_path / "ct.nii.gz"
    proc = rtseg("convert", "dicom-to-nifti", "--series", str(tmp_path / "ct"), "--out", str(out))
    line = one_error_line(proc, "convert")
    assert proc.returncode == 2 and bad.name in line and "NaN or infinite" in line
    assert not out.exists() and not list(tmp_path.glob(".ct.nii.gz*"))


@pytest.mark.parametrize("make, expected", [(nan_ct, "NaN or infinite"), (unknown_geometry_ct, "qform_code = 0")])
def test_convert_nifti_to_rtstruct_refuses_bad_labels(tmp_path, make, expected, capsys):
    from rtseg.cli import main as cli_main

    write_dicom_series(Volume(phantom((24, 20, 16)), AFFINE), tmp_path / "ct")
    labels = make(tmp_path / "labels.nii.gz")
    out = tmp_path / "rs.dcm"
    rc = cli_main.main(["convert", "nifti-to-rtstruct", "--series", str(tmp_path / "ct"), "--labels", str(labels),
                        "--out", str(out), "--names", "body"])
    err = capsys.readouterr().err
    assert rc == 2 and f"rtseg convert: error: {labels}" in err and expected in err and not out.exists()
    assert read_dicom_series(tmp_path / "ct").shape == (24, 20, 16)  # the CT itself was fine


@pytest.mark.parametrize("which", ["pred", "gt"])
@pytest.mark.parametrize("make, expected", [(nan_ct, "NaN or infinite"), (unknown_geometry_ct, "qform_code = 0")])
def test_evaluate_refuses_bad_volumes_and_writes_no_report(tmp_path, which, make, expected, capsys):
    from rtseg.cli import main as cli_main

    labels = (phantom((24, 20, 16)) > 0).astype(np.uint8)
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        write_nifti(Volume(labels, AFFINE), tmp_path / folder / "p01.nii.gz")
    bad = make(tmp_path / which / "p01.nii.gz")
    out = tmp_path / "report"
    rc = cli_main.main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out", str(out),
                        "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and f"rtseg evaluate: error: {bad}" in err and expected in err
    assert not out.exists() or not any(out.iterdir())


def test_evaluate_through_python_m_rtseg(tmp_path):
    """The same path as a user's shell: one line on stderr, exit 2."""
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        write_nifti(Volume(np.zeros((8, 8, 8), np.uint8), AFFINE), tmp_path / folder / "p01.nii.gz")
    unknown_geometry_ct(tmp_path / "gt" / "p01.nii.gz")
    proc = rtseg("evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "r"))
    line = one_error_line(proc, "evaluate")
    assert proc.returncode == 2 and "p01.nii.gz: header has qform_code = 0 and sform_code = 0" in line
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    assert nib.load(str(tmp_path / "pred" / "p01.nii.gz")).shape == (8, 8, 8)
