"""The output-format registry of ``rtseg predict``: a toy format registered here (one writer + one line) is
accepted by ``--format``, listed by ``--help`` and written by the pipeline; ROI names are resolved once per run;
options travel as one object."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pydicom
import pytest

from rtseg.cli import main as cli_main
from rtseg.cli.main import build_parser
from rtseg.errors import ConfigError
from rtseg.inference.outputs import OutputContext, OutputFormat, output_names, register_output, unregister_output
from rtseg.inference.pipeline import PredictOptions, predict_path
from rtseg.inference.predictor import NetworkOptions
from rtseg.io.jsonfile import write_json
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume, affine_from_spacing
from predict_helpers import ckpt_coarse, phantom  # noqa: F401 (fixtures)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def write_volumes(labels: np.ndarray, volume: Volume, ctx: OutputContext, path: Path) -> Path:
    """The toy format: each organ's volume in mL, as JSON."""
    ml = float(np.prod(volume.spacing)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(ctx.class_names))
    return write_json({name: float(counts[i]) * ml for i, name in enumerate(ctx.class_names) if i > 0}, path)


@pytest.fixture
def toy_format() -> Iterator[OutputFormat]:
    fmt = register_output(OutputFormat("volumes", "organ volumes in mL", "_volumes.json", write_volumes))
    try:
        yield fmt
    finally:
        unregister_output(fmt.name)


def test_a_registered_format_is_a_cli_choice_in_help_and_written(toy_format: OutputFormat, ckpt_coarse: Path,
                                                                 tmp_path: Path, capsys) -> None:
    vol = Volume(phantom(shape=(36, 32, 20)), affine_from_spacing((1.5, 1.5, 2.5)))
    write_nifti(vol, tmp_path / "in" / "p01_ct.nii.gz")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--help"])
    assert "volumes (organ volumes in mL, CASE_volumes.json)" in " ".join(capsys.readouterr().out.split())
    rc = cli_main.main(["predict", "--checkpoint", str(ckpt_coarse), "--input", str(tmp_path / "in"), "--output",
                        str(tmp_path / "out"), "--format", "nifti", "volumes", "--no-qa", "--device", "cpu"])
    assert rc == 0
    got = json.loads((tmp_path / "out" / "p01_volumes.json").read_text())
    img = nib.load(tmp_path / "out" / "p01_pred.nii.gz")  # independent: the labels file and its affine
    pred = np.asarray(img.dataobj)
    voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
    assert set(got) == {"prostate", "bladder"} and (pred > 0).any()
    for label, name in ((1, "prostate"), (2, "bladder")):
        assert got[name] == pytest.approx((pred == label).sum() * voxel_ml, rel=1e-9)
    assert got["prostate"] + got["bladder"] > 0


def test_unknown_format_is_refused_by_the_cli_and_the_api(ckpt_coarse: Path, tmp_path: Path) -> None:
    assert "volumes" not in output_names()  # the toy format is gone with its fixture
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--checkpoint", "c.pt", "--input", "i", "--output", "o",
                                   "--format", "volumes"])
    with pytest.raises(ConfigError, match=r"output format\(s\) \['volumes'\]: expected one or more of nifti"):
        predict_path(ckpt_coarse, tmp_path, tmp_path / "o", PredictOptions(formats=("volumes",), device="cpu"))
    with pytest.raises(ConfigError, match="html needs the case QA"):
        predict_path(ckpt_coarse, tmp_path, tmp_path / "o", PredictOptions(formats=("html",), device="cpu"))
    with pytest.raises(ConfigError, match=r"overlap must be in \[0, 1\)"):
        NetworkOptions(overlap=1.0)
    assert not (tmp_path / "o").exists()


def _count_roi_resolutions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every binding of ``roi_names_for`` a predict run could reach, counted."""
    import rtseg.inference.outputs as outputs
    import rtseg.io.rtstruct.write as rtstruct_write
    import rtseg.io.dicom.seg as seg

    calls: list[int] = []
    original = outputs.roi_names_for

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - a transparent spy
        calls.append(1)
        return original(*args, **kwargs)

    for mod in (outputs, rtstruct_write, seg):
        monkeypatch.setattr(mod, "roi_names_for", counted)
    return calls


def test_roi_names_are_resolved_once_per_run_and_reach_rtstruct_and_seg(ckpt_coarse: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    series = DATA / "dicom-ct-series"
    if not series.is_dir():
        pytest.skip(f"{series} not found (../shared/data is absent)")
    for name in ("a", "b"):
        shutil.copytree(series, tmp_path / "in" / name)
    mapping = tmp_path / "names.json"
    mapping.write_text(json.dumps({"prostate": "Prost_CTV"}))
    calls = _count_roi_resolutions(monkeypatch)
    report = predict_path(ckpt_coarse, tmp_path / "in", tmp_path / "out",
                          PredictOptions(formats=("rtstruct", "seg"), device="cpu", roi_names=mapping))
    assert not report.failed and len(calls) == 1
    for name in ("a", "b"):
        rt = pydicom.dcmread(tmp_path / "out" / f"{name}_rtstruct.dcm")
        seg = pydicom.dcmread(tmp_path / "out" / f"{name}_seg.dcm")
        rt_names = {str(r.ROIName) for r in rt.StructureSetROISequence}
        seg_names = {str(s.SegmentLabel) for s in seg.SegmentSequence}
        assert "Prost_CTV" in rt_names and "Prost_CTV" in seg_names  # the mapping's name, not TG-263's "Prostate"
        assert rt_names <= {"Prost_CTV", "Bladder"} and seg_names <= {"Prost_CTV", "Bladder"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"liver": "Liver"}))
    with pytest.raises(ConfigError, match=r"unknown classes \['liver'\]"):
        predict_path(ckpt_coarse, tmp_path / "in", tmp_path / "out2",
                     PredictOptions(formats=("rtstruct",), device="cpu", roi_names=bad))
    assert not (tmp_path / "out2").exists()
