"""``rtseg predict --format rtstruct seg`` on a DICOM series: both files valid, naming, holes option, agreement."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom

from dicom_checks import assert_dciodvfy_clean
from interop_data import need_series
from rtseg.cli import main as cli_main
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.nifti import read_nifti
from rtseg.io.rtstruct import rtstruct_to_labels
from rtseg.io.dicom.seg import seg_to_labels
from predict_helpers import NAMES, make_checkpoint


def test_predict_writes_rtstruct_and_seg_that_agree(tmp_path: Path) -> None:
    series_dir = need_series()
    ckpt = make_checkpoint(tmp_path / "c4.pt", target_spacing=(4.0, 4.0, 4.0), patch=(32, 32, 16))
    (tmp_path / "names.json").write_text(json.dumps({"bladder": "Blase"}))
    out = tmp_path / "out"
    assert cli_main.main(["predict", "--checkpoint", str(ckpt), "--input", str(series_dir), "--output", str(out),
                          "--format", "nifti", "rtstruct", "seg", "--holes", "xor", "--roi-names",
                          str(tmp_path / "names.json"), "--device", "cpu"]) == 0
    rs, seg = out / "dicom-ct-series_rtstruct.dcm", out / "dicom-ct-series_seg.dcm"
    assert_dciodvfy_clean(rs)
    assert_dciodvfy_clean(seg)
    pred = read_nifti(out / "dicom-ct-series_pred.nii.gz").array
    present = sorted(int(v) for v in np.unique(pred) if v)
    assert present  # the untrained-but-fitted network labels the body as class 1
    ds = pydicom.dcmread(rs)
    names = ["Prostate", "Blase"]  # TG-263 for prostate, the mapping file for bladder
    assert [r.ROIName for r in ds.StructureSetROISequence] == [names[c - 1] for c in present]
    assert [s.SegmentLabel for s in pydicom.dcmread(seg).SegmentSequence] == names  # every class, numbers stable
    series = read_dicom_series(series_dir)
    aliases = {"bladder": ["Blase"]}
    from_rs, _ = rtstruct_to_labels(rs, series, NAMES, aliases)
    from_seg, _ = seg_to_labels(seg, series, NAMES, aliases)
    np.testing.assert_array_equal(from_rs.array, pred)
    np.testing.assert_array_equal(from_seg.array, pred)


def test_predict_roi_name_mistakes_are_one_line(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    series_dir = need_series()
    ckpt = make_checkpoint(tmp_path / "c.pt")
    base = ["predict", "--checkpoint", str(ckpt), "--input", str(series_dir), "--output", str(tmp_path / "out"),
            "--format", "rtstruct", "--device", "cpu", "--roi-names"]
    assert cli_main.main([*base, str(tmp_path / "missing.json")]) == 2
    assert "missing.json: ROI name mapping file not found" in capsys.readouterr().err
    (tmp_path / "names.json").write_text(json.dumps({"kidney": "Niere"}))
    assert cli_main.main([*base, str(tmp_path / "names.json")]) == 2
    err = capsys.readouterr().err
    assert "ROI names given for unknown classes ['kidney']" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before any output
