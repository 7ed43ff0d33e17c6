"""`rtseg demo` end to end on a tiny budget (slow)."""
import json

import pytest

from rtseg.cli.main import main

pytestmark = pytest.mark.slow


def test_demo_writes_metrics_gifs_and_curves(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--cases", "6", "--minutes", "0.6", "--base-filters", "2", "--cpu"]) == 0
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
