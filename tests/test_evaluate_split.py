"""The one predict-and-score loop (``rtseg val/test``, the demo, the ablation benchmark) and its per-case CSV."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rtseg.config import config_from_dict
from rtseg.data.normalization import Normalization
from rtseg.data.preprocess import Preprocessing
from rtseg.errors import ConfigError
from rtseg.evaluation.report import CSV_NAME, evaluate_folders
from rtseg.inference.bundle import InferenceBundle, save_bundle
from rtseg.inference.evaluate_split import evaluate_split, predict_and_score
from rtseg.inference.predictor import Predictor, load_model
from rtseg.io.naming import prediction_file
from rtseg.io.nifti import write_nifti
from rtseg.models.spec import build_model, model_spec
from synth import make_nifti_dataset

NAMES = ("background", "prostate", "bladder")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("split")
    root = make_nifti_dataset(tmp / "data", n_train=1, n_val=2, shape=(24, 24, 16), n_classes=len(NAMES))
    torch.manual_seed(0)
    spec = model_spec("ResUnet_3D", 1, len(NAMES), 4, 0.0)
    bundle = InferenceBundle(spec, NAMES, ((0, 255, 255), (204, 0, 102)),
                             Preprocessing(Normalization("ct_window", (-200.0, 500.0))), (16, 16, 16))
    save_bundle(tmp / "model.pt", bundle, build_model(spec).state_dict())
    return root, tmp / "model.pt"


def config(root: Path, **dataset: object):
    return config_from_dict({"CUDA": False, "MODEL": {"NAME": "ResUnet_3D"},
                             "DATASET": {"NAME": "nifti", "PATH": str(root), "N_CLASSES": len(NAMES), **dataset}}, "<test>")


def test_val_per_case_csv_is_what_rtseg_evaluate_writes(setup, tmp_path: Path) -> None:
    """Same predictions, two routes (val's loop; saved files + ``rtseg evaluate``): the same CSV, byte for byte."""
    root, ckpt = setup
    cfg = config(root)
    result = evaluate_split(cfg, ckpt, "val", tmp_path / "val", torch.device("cpu"))
    assert result["n_cases"] == 2 and set(result["dice"]) == set(NAMES)
    assert json.loads((tmp_path / "val" / "val_metrics.json").read_text())["mean_dice"] == result["mean_dice"]
    predictor = Predictor(load_model(ckpt), amp=cfg.TRAINING.AMP)
    scores = predict_and_score(predictor, cfg.DATASET, "val", on_case=lambda ref, ct, gt, pred: write_nifti(
        pred, tmp_path / "pred" / prediction_file(ref.case_id)))
    assert scores.cases == ["case000", "case001"] and scores.confusion["dice"] == result["dice"]
    evaluate_folders(tmp_path / "pred", root / "val", NAMES, tmp_path / "evaluate", plots=False)
    per_case = (tmp_path / "val" / "val_per_case.csv").read_text()
    assert per_case.splitlines()[0] == "case,organ,metric,value"
    assert per_case == (tmp_path / "evaluate" / CSV_NAME).read_text()


def test_partial_labels_limit_rows_to_contoured_organs(setup, tmp_path: Path) -> None:
    root, ckpt = setup
    (tmp_path / "partial.json").write_text(json.dumps({"case000": ["bladder"]}))
    cfg = config(root, PARTIAL_LABELS=str(tmp_path / "partial.json"))
    scores = predict_and_score(Predictor(load_model(ckpt)), cfg.DATASET, "val")
    organs = {(r["case"], r["organ"]) for r in scores.rows}
    assert organs == {("case000", "bladder"), ("case001", "prostate"), ("case001", "bladder")}


def test_class_count_mismatch_names_the_checkpoint(setup) -> None:
    root, ckpt = setup
    cfg = config_from_dict({"MODEL": {"NAME": "ResUnet_3D"}, "DATASET": {"NAME": "nifti", "PATH": str(root), "N_CLASSES": 6}},
                           "<test>")
    with pytest.raises(ConfigError, match=r"N_CLASSES is 6 but checkpoint .*model.pt predicts 3 classes"):
        predict_and_score(Predictor(load_model(ckpt)), cfg.DATASET, "val")


def test_val_with_clean_up_scores_what_predict_would_write(setup, tmp_path: Path) -> None:
    """--largest-component / --fill-holes: the scored labels are predict's post-processed labels."""
    from rtseg.inference.postprocess import postprocess

    root, ckpt = setup
    cfg = config(root)
    predictor = Predictor(load_model(ckpt), amp=cfg.TRAINING.AMP)
    raw = predict_and_score(predictor, cfg.DATASET, "val", on_case=lambda ref, ct, gt, pred: write_nifti(
        pred.with_array(postprocess(pred.array, True, True)), tmp_path / "pred" / prediction_file(ref.case_id)))
    result = evaluate_split(cfg, ckpt, "val", tmp_path / "val", torch.device("cpu"), largest_component=True,
                            fill_holes=True)
    assert result["largest_component"] and result["fill_holes"]
    evaluate_folders(tmp_path / "pred", root / "val", NAMES, tmp_path / "evaluate", plots=False)
    assert (tmp_path / "val" / "val_per_case.csv").read_text() == (tmp_path / "evaluate" / CSV_NAME).read_text()
    assert raw.rows != predict_and_score(predictor, cfg.DATASET, "val", largest_component=True).rows  # it changed something
