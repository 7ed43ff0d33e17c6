"""``rtseg review`` end to end on NIfTI files, and its one-line errors."""
from __future__ import annotations

import json

import numpy as np
from review_cases import NAMES, clean_case, training_stats

from rtseg.cli.main import main
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume


def _files(tmp_path):
    ct, lab = clean_case()
    pred = lab.array.copy()
    pred[pred == 1] = 0  # prostate missing
    write_nifti(ct, tmp_path / "p_ct.nii.gz")
    write_nifti(lab, tmp_path / "p_gt.nii.gz", np.uint8)
    write_nifti(lab.with_array(pred), tmp_path / "p_pred.nii.gz", np.uint8)
    (tmp_path / "plan.json").write_text(json.dumps({"target_spacing": [4, 4, 5], "organ_stats": training_stats()}))
    return ct


def test_review_writes_a_page_with_qa_against_training_statistics(tmp_path, capsys) -> None:
    _files(tmp_path)
    out = tmp_path / "case.html"
    rc = main(["review", "--ct", str(tmp_path / "p_ct.nii.gz"), "--labels", str(tmp_path / "p_pred.nii.gz"),
               "--gt", str(tmp_path / "p_gt.nii.gz"), "--stats", str(tmp_path / "plan.json"), "--out", str(out)])
    assert rc == 0
    assert "1 flag(s)" in capsys.readouterr().out
    text = out.read_text()
    assert "prostate missing" in text and 'id="metrics"' in text and 'id="view-gt-axial"' in text
    assert "femoral_head_right" in text  # class names come from the statistics


def test_review_uses_a_written_qa_json(tmp_path) -> None:
    _files(tmp_path)
    qa = {"qa_version": 1, "case": "p", "class_names": list(NAMES), "flags": [], "n_flags": 0, "flag_weight": 0,
          "organs": [{"organ": n, "label": i, "flags": [], "edges": []} for i, n in enumerate(NAMES) if i]}
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    rc = main(["review", "--ct", str(tmp_path / "p_ct.nii.gz"), "--labels", str(tmp_path / "p_pred.nii.gz"),
               "--qa", str(tmp_path / "qa.json"), "--out", str(tmp_path / "c.html")])
    assert rc == 0 and "prostate missing" not in (tmp_path / "c.html").read_text()


def test_review_errors_are_one_line(tmp_path, capsys) -> None:
    ct = _files(tmp_path)
    write_nifti(Volume(np.zeros((8, 8, 8), np.uint8), np.eye(4)), tmp_path / "small.nii.gz")
    rc = main(["review", "--ct", str(tmp_path / "p_ct.nii.gz"), "--labels", str(tmp_path / "small.nii.gz"),
               "--out", str(tmp_path / "x.html")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("rtseg review: error: ") and "differs from the CT's" in err and "\n" not in err
    assert not (tmp_path / "x.html").exists()
    rc = main(["review", "--ct", str(tmp_path / "p_ct.nii.gz"), "--labels", str(tmp_path / "p_pred.nii.gz"),
               "--out", str(tmp_path / "x.png")])
    assert rc == 2 and "--out must end in .html" in capsys.readouterr().err
    rc = main(["review", "--ct", str(tmp_path / "p_ct.nii.gz"), "--labels", str(tmp_path / "p_pred.nii.gz"),
               "--stats", str(tmp_path / "p_gt.nii.gz"), "--out", str(tmp_path / "x.html")])
    assert rc == 2 and "not valid JSON" in capsys.readouterr().err
    rc = main(["review", "--ct", str(tmp_path / "p_ct.nii.gz"), "--labels", str(tmp_path / "p_pred.nii.gz"),
               "--stats", str(tmp_path / "p_gt.nii.gz").replace("p_gt.nii.gz", "missing.json"), "--out", str(tmp_path / "x.html")])
    assert rc == 2 and "file not found" in capsys.readouterr().err
    assert ct.shape == (64, 64, 32)
