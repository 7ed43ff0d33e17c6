"""Approved contours back into training, on phantoms (simulated): export -> fine-tune -> compare-models -> serve promote."""
from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import stats

from audit_data import approved_truth, small_series, two_organ_checkpoint, write_auto
from predict_helpers import NAMES
from rtseg.cli.main import main
from rtseg.inference.bundle import load_bundle
from rtseg.inference.ensemble import load_predictor
from rtseg.serve.destinations import split_outputs
from rtseg.serve.models import model_version
from test_serve import InProcessNode
from test_serve_support import need_tools, processes, storescu, wait_for

__all__ = ["processes"]
N_CASES = 20  # the export deals 4 to val and 2 to test: 6 held-out cases, enough for p < 0.05 in a paired test


def run(argv: list[str]) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0, argv
    return buf.getvalue()


@pytest.mark.slow
def test_export_finetune_compare_promote(tmp_path: Path, processes: list) -> None:
    need_tools("storescu")
    a = two_organ_checkpoint(tmp_path / "a.pt")
    pred = load_predictor(a, "cpu")
    for i in range(N_CASES):
        s = small_series(tmp_path / "auto" / f"p{i}" / "ct", seed=40 + i)
        write_auto(pred.predict_labels(s), s, tmp_path / "auto" / f"p{i}" / "rtstruct.dcm", classes=NAMES)
        approved_truth(s, tmp_path / "approved" / f"p{i}.dcm", f"202503{i + 1:02d}")
    ds = tmp_path / "ds"
    run(["audit", "export-dataset", "--auto", str(tmp_path / "auto"), "--approved", str(tmp_path / "approved"),
         "--out", str(ds), "--init-model", str(a), "--iterations", "40"])
    table = json.loads((ds / "rtseg_dataset.json").read_text())
    assert table["class_names"] == NAMES and len(table["cases"]) == N_CASES
    assert sorted(len(v) for v in table["splits"].values()) == [2, 4, 14]
    run(["train", "-c", str(ds / "rtseg_finetune.yml"), "--run-dir", str(tmp_path / "run"), "--set", "CUDA=false",
         "--set", "TRAINING.BATCH_SIZE=1"])
    b = tmp_path / "run" / "checkpoints" / "last.pt"
    ba, bb = load_bundle(a)[0], load_bundle(b)[0]
    # a drop-in replacement: same network, classes, patch and normalization; A works on the input's own grid,
    # so B records the grid it was tuned on, the data's common spacing
    assert (bb.model_spec, bb.class_names, bb.preprocessing.normalization, bb.patch_size) == \
        (ba.model_spec, ba.class_names, ba.preprocessing.normalization, ba.patch_size)
    assert ba.preprocessing.target_spacing is None and bb.preprocessing.target_spacing == (2.0, 2.0, 2.0)
    out = run(["compare-models", "--a", str(a), "--b", str(b), "--data", str(ds), "--out", str(tmp_path / "cmp")])
    verdicts = {v["organ"]: v for v in json.loads((tmp_path / "cmp" / "compare_models.json").read_text())["organs"]}
    import csv

    with open(tmp_path / "cmp" / "compare_models.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len({r["case"] for r in rows}) == 6  # the val and test splits only
    for organ, v in verdicts.items():
        da = np.array([float(r["surface_dice_2mm_a"]) for r in rows if r["organ"] == organ])
        db = np.array([float(r["surface_dice_2mm_b"]) for r in rows if r["organ"] == organ])
        assert v["p_value"] == pytest.approx(stats.wilcoxon(db - da).pvalue)
        assert v["median_diff"] == pytest.approx(np.median(db - da))
        assert (v["verdict"] == "B better") == (v["p_value"] < 0.05 and np.median(db - da) > 0)
    assert verdicts["prostate"]["verdict"] == "B better", out  # fine-tuned on what the physicians approve

    node = InProcessNode(tmp_path, checkpoint=str(a), device="cpu", complete_on_release=True)
    processes.append(node)
    store = node.cfg.store_path
    assert "model " + model_version(b) in run(["serve", "promote", str(b), "--store", str(store)])
    small_series(tmp_path / "next", seed=99)
    storescu(node.port, sorted((tmp_path / "next").glob("*.dcm")))
    wait_for(lambda: [s for _, s, _ in node.states()] == ["done"], 120, "the next series to be contoured")
    con = sqlite3.connect(store / "jobs.sqlite")
    checkpoint, outputs = con.execute("SELECT checkpoint, rtstruct FROM jobs").fetchone()
    con.close()
    assert Path(checkpoint) == b.resolve() and model_version(checkpoint) == model_version(b) != model_version(a)
    rtstruct = next(p for p in split_outputs(outputs) if p.name.endswith("rtstruct.dcm"))
    rois = pydicom.dcmread(rtstruct).StructureSetROISequence  # the promoted model names itself in what it writes
    assert all(f"sha256:{model_version(b)}" in r.ROIGenerationDescription for r in rois)
    assert f"model: {model_version(b)}" in run(["serve", "status", "--store", str(store)])
