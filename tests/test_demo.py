"""`rtseg demo` end to end on a tiny budget (slow); which device it and training choose, and what they say."""
import json
import logging

import pytest
import torch
import yaml

from rtseg.cli.main import main
from rtseg.config import load_config
from rtseg.device import select_device


@pytest.mark.slow
def test_demo_writes_metrics_gifs_and_curves(tmp_path, capsys, caplog):
    out = tmp_path / "demo"
    caplog.set_level(logging.INFO)
    # no --cpu: the user asked for nothing, so the GPU if there is one and no "CUDA requested" line if not
    assert main(["demo", "--out", str(out), "--cases", "6", "--minutes", "0.6", "--base-filters", "2"]) == 0
    assert "CUDA requested" not in caplog.text
    printed = capsys.readouterr().out
    assert "prostate" in printed and "mean" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["organs"]) == {"prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right"}
    assert 0.0 <= metrics["mean_dice"] <= 1.0 and metrics["iterations"] >= 1
    figs = out / "figures"
    n_test = metrics["test_cases"]
    assert len(list(figs.glob("*.gif"))) == n_test and len(list(figs.glob("*_montage.png"))) == n_test
    assert (figs / "training_curves.png").is_file()
    assert len(list((out / "predictions").glob("*_pred.nii.gz"))) == n_test
    review = out / "review"  # a page per test patient, with ground truth, QA against the demo's training statistics
    assert len(list(review.glob("*_review.html"))) == n_test and (review / "index.html").is_file()
    qa = json.loads(next(review.glob("*_qa.json")).read_text())
    assert qa["rules_skipped"] == ["tta (no TTA passes)"] and "Ground truth" in next(review.glob("*_review.html")).read_text()
    assert metrics["review_index"] == str(review / "index.html")
    assert main(["demo", "--out", str(out), "--cases", "3"]) == 2
    assert "needs at least 6" in capsys.readouterr().err


def test_cuda_is_only_said_missing_when_asked_for(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    caplog.set_level(logging.INFO)
    assert select_device(None).type == "cpu" and select_device(False).type == "cpu"
    assert "CUDA requested" not in caplog.text
    assert select_device(True).type == "cpu"
    assert [r.getMessage() for r in caplog.records] == ["CUDA requested but no GPU is available: running on CPU"]
    assert caplog.records[0].levelno == logging.WARNING
    base = {"DATASET": {"NAME": "nifti", "PATH": str(tmp_path), "N_CLASSES": 3}}
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(base))
    assert load_config(path).cuda_request is None  # the key absent: nobody asked
    assert load_config(path, ["CUDA=true"]).cuda_request is True
    path.write_text(yaml.safe_dump({**base, "CUDA": False}))
    assert load_config(path).cuda_request is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device(None).type == "cuda" and select_device(False).type == "cpu"  # a GPU is used unless refused
