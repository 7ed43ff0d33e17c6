"""The 5-fold CV + ensemble machinery end to end on synthetic phantoms, on a reduced budget (a machinery
check, not an accuracy result): rtseg cv --run, its CV table, the chosen post-processing, ensemble.json,
and rtseg predict with the CV folder equal to the argmax of the numpy mean of the members' probabilities,
post-processed as chosen. docs/RESULTS.md ("Cross-validation and ensembles (machinery)") has its figures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtseg.cli.main import main
from rtseg.inference.postprocess import postprocess_organs
from rtseg.inference.predictor import Predictor, load_model
from rtseg.io.nifti import read_nifti

pytestmark = pytest.mark.slow

ORGANS = ["prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right"]
CONFIG = """
CUDA: false
MODEL: {{NAME: ResUnet_3D, BASE_FILTERS: 8, DROPOUT: 0.0}}
DATASET: {{NAME: nifti, PATH: {path}, N_CLASSES: 6, NORMALIZE: ct_window, HU_WINDOW: [-250, 350],
          PATCH_SIZE: [32, 32, 32], FG_OVERSAMPLE: 0.5}}
TRAINING:
  ITER_MAX: 40
  BATCH_SIZE: 2
  VAL_INTERVAL: 40
  PRINT_INTERVAL: 10
  OPTIM: {{name: adamw, lr: 0.003, weight_decay: 0.0001}}
  LR_SCHEDULER: {{name: poly_lr, max_iter: 40, warmup_iters: 4}}
  LOSS_FUNC: {{name: dice_ce}}
"""


def test_five_fold_cv_and_ensemble_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "phantoms"
    assert main(["phantoms", "--out", str(data), "--cases", "12", "--split-fractions", "train=10", "test=2"]) == 0
    cfg = tmp_path / "cv.yml"
    cfg.write_text(CONFIG.format(path=data))
    cv = tmp_path / "cv"
    capsys.readouterr()
    assert main(["cv", "-c", str(cfg), "--folds", "5", "--run", "--out", str(cv)]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    print(printed)  # shown with -s: the figures docs/RESULTS.md quotes
    assert "mean organ Dice (out-of-fold)" in printed and all(o in printed for o in ORGANS)

    train_ids = sorted(p.name.removesuffix("_ct.nii.gz") for p in (data / "train").glob("*_ct.nii.gz"))
    summary = json.loads((cv / "cv_summary.json").read_text())
    assert summary["folds"] == 5 and len(summary["fold_mean_dice"]) == 5
    assert set(summary["organs"]) == set(ORGANS) and all(o["n_cases"] == 10 for o in summary["organs"].values())
    lines = (cv / "cv_per_case.csv").read_text().splitlines()[1:]
    keys = [tuple(ln.split(",")[:3]) for ln in lines]  # (case, organ, metric)
    assert sorted({k[0] for k in keys}) == train_ids and len(keys) == len(set(keys))  # every case out of fold, once

    post = json.loads((cv / "postprocessing.json").read_text())
    assert set(post) == set(ORGANS)
    for organ, p in post.items():
        variant = {(False, False): "none", (True, False): "largest_component", (False, True): "fill_holes",
                   (True, True): "both"}[(p["largest_component"], p["fill_holes"])]
        d = p["cv_dice"]
        assert d[variant] == max(d.values())  # the best mean CV Dice ...
        assert variant == "none" or d[variant] > d["none"]  # ... and an operation only where it raised it

    ensemble = json.loads((cv / "ensemble.json").read_text())
    members = [cv / m for m in ensemble["members"]]
    assert len(members) == 5 and all(m.is_file() for m in members)
    assert {o: (p["largest_component"], p["fill_holes"]) for o, p in ensemble["postprocessing"].items()} == \
        {o: (p["largest_component"], p["fill_holes"]) for o, p in post.items()}

    cts = tmp_path / "test_ct"  # the CTs alone (predict would take the label files for CTs too)
    cts.mkdir()
    for p in (data / "test").glob("*_ct.nii.gz"):
        (cts / p.name).symlink_to(p)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(cv), "--input", str(cts), "--output", str(out)]) == 0
    largest = [ORGANS.index(o) + 1 for o, p in post.items() if p["largest_component"]]
    fill = [ORGANS.index(o) + 1 for o, p in post.items() if p["fill_holes"]]
    predictors = [Predictor(load_model(m)) for m in members]
    for ct_path in sorted(cts.glob("*_ct.nii.gz")):
        ct = read_nifti(ct_path)
        mean = np.mean([p.predict_with_probabilities(ct)[1] for p in predictors], axis=0)
        expected = postprocess_organs(mean.argmax(0).astype(np.uint8), largest, fill)
        got = read_nifti(out / f"{ct_path.name.removesuffix('_ct.nii.gz')}_pred.nii.gz").array
        np.testing.assert_array_equal(got, expected)
