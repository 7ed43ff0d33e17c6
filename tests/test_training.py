"""End-to-end training on generated data (slow, still run in CI)."""
import json
from pathlib import Path

import pytest
import torch

from rtseg.cli.main import main
from rtseg.io.checkpoint import load_checkpoint
from synth import make_legacy_npy_dataset

pytestmark = pytest.mark.slow

TINY = ["TRAINING.BATCH_SIZE=1", "TRAINING.WORKERS=0", "MODEL.BASE_FILTERS=2", "CUDA=false"]


@pytest.fixture(scope="module")
def seed_dataset(tmp_path_factory) -> Path:
    return make_legacy_npy_dataset(tmp_path_factory.mktemp("seedds"), n_train=2, n_val=1, n_test=1, shape=(32, 16, 16))


def test_each_seed_config_trains_and_validates(seed_configs, seed_dataset, tmp_path, capsys):
    for cfg in seed_configs:
        run = tmp_path / cfg.stem
        args = ["train", "-c", str(cfg), "--run-dir", str(run), "--set", f"DATASET.PATH={seed_dataset}", "--set", "TRAINING.ITER_MAX=2"]
        for o in TINY:
            args += ["--set", o]
        assert main(args) == 0, capsys.readouterr().err
        for name in ("best.pt", "last.pt"):
            assert (run / "checkpoints" / name).is_file()
        assert (run / "config.yaml").is_file() and (run / "train.log").is_file()
        assert any((run / "tensorboard").iterdir())
        ck = load_checkpoint(run / "checkpoints" / "last.pt")
        assert ck["iteration"] == 2 and ck["class_names"][1] == "prostate" and ck["model_spec"]["name"] in cfg.read_text()
        assert set(ck) >= {"model", "optimizer", "scheduler", "config", "preprocessing", "patch_size", "colors"}
        out = tmp_path / f"{cfg.stem}-val"
        vargs = ["val", "-c", str(cfg), "--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(out), "--set", f"DATASET.PATH={seed_dataset}"]
        for o in TINY:
            vargs += ["--set", o]
        assert main(vargs) == 0, capsys.readouterr().err
        metrics = json.loads((out / "val_metrics.json").read_text())
        assert set(metrics) >= {"overall_acc", "mean_acc", "freqw_iou", "mean_dice", "dice"}
        assert set(metrics["dice"]) == {"background", "prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right"}
        assert "mean_dice" in capsys.readouterr().out


LEARN = """
CUDA: false
MODEL: {{NAME: ResUnet_3D, BASE_FILTERS: 8, DROPOUT: 0.0}}
DATASET: {{NAME: prostateCT_vol, PATH: {path}, N_CLASSES: 3, NORMALIZE: ct_window, HU_WINDOW: [-200, 500], PATCH_SIZE: [24, 24, 24], AUGMENT: false}}
TRAINING:
  ITER_MAX: {iters}
  BATCH_SIZE: 2
  VAL_INTERVAL: {val}
  PRINT_INTERVAL: 20
  OPTIM: {{name: adam, lr: 0.003}}
  LOSS_FUNC: {{name: dice_ce}}
"""


def test_learns_and_resumes(tmp_path, capsys):
    data = make_legacy_npy_dataset(tmp_path / "data", n_train=4, n_val=2, n_test=1, shape=(32, 32, 32), n_classes=3, radius=(5, 8))
    cfg = tmp_path / "learn.yml"
    cfg.write_text(LEARN.format(path=data, iters=30, val=30))
    run = tmp_path / "run"
    assert main(["train", "-c", str(cfg), "--run-dir", str(run)]) == 0, capsys.readouterr().err
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["iterations"] == 30
    first = summary["best_mean_dice"]
    # resume continues from iteration 30 to 60 in the same run dir
    cfg.write_text(LEARN.format(path=data, iters=60, val=15))
    assert main(["train", "-c", str(cfg), "--resume", str(run)]) == 0, capsys.readouterr().err
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["iteration"] == 60
    log = (run / "train.log").read_text()
    assert "resuming at iteration 30" in log and "[val 45]" in log and "[val 15]" not in log
    best = load_checkpoint(run / "checkpoints" / "best.pt")["best_metric"]
    assert best >= 0.85, f"mean Dice {best:.3f} after 60 iterations (first part: {first:.3f})"


def test_bad_data_is_one_line_error(tmp_path, seed_configs, capsys):
    (tmp_path / "train" / "CT").mkdir(parents=True)
    (tmp_path / "train" / "SEG").mkdir(parents=True)
    torch.save({}, tmp_path / "x.pt")
    rc = main(["train", "-c", str(seed_configs[0]), "--set", f"DATASET.PATH={tmp_path}", "--set", "CUDA=false"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no .npy volumes found" in err
    rc = main(["train", "-c", str(seed_configs[0]), "--set", f"DATASET.PATH={tmp_path}", "--set", "MODEL.NAME=UNet"])
    err = capsys.readouterr().err
    assert rc == 2 and "valid names" in err and "ResUnet_3D" in err


def test_init_model_from_dataparallel_checkpoint(tmp_path, seed_dataset, seed_configs, capsys):
    from rtseg.models import create_model

    m = create_model("ResUnet_3D", base_filters=2, n_classes=6)
    state = {f"module.{k}": v for k, v in m.state_dict().items()}
    state["module.extra.weight"] = torch.zeros(3)
    torch.save({"model_state": state}, tmp_path / "dp.pt")
    run = tmp_path / "run"
    args = ["train", "-c", str(seed_configs[0]), "--run-dir", str(run), "--set", f"DATASET.PATH={seed_dataset}",
            "--set", "TRAINING.ITER_MAX=1", "--set", f"MODEL.INIT_MODEL={tmp_path / 'dp.pt'}"]
    for o in TINY:
        args += ["--set", o]
    assert main(args) == 0, capsys.readouterr().err
    log = (run / "train.log").read_text()
    assert "loaded" in log and "skipped key (absent from model or shape differs): extra.weight" in log
