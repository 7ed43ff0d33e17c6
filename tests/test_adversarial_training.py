"""ARPM-net in the training loop: MODEL.ADV, MODEL.MRF and ARPM_net train on CPU (slow)."""
import math
import re

import pytest
import torch

from rtseg.config import config_from_dict
from rtseg.io.checkpoint import load_checkpoint
from rtseg.training.trainer import fit
from synth import make_legacy_npy_dataset

pytestmark = pytest.mark.slow


def cfg_for(path, **model):
    return config_from_dict({
        "CUDA": False,
        "MODEL": {"NAME": "ResUnet_3D", "BASE_FILTERS": 2, **model},
        "DATASET": {"NAME": "prostateCT_vol", "PATH": str(path), "N_CLASSES": 6, "NORMALIZE": "ct_window", "AUGMENT": False},
        "TRAINING": {"ITER_MAX": 4, "BATCH_SIZE": 1, "VAL_INTERVAL": 2, "PRINT_INTERVAL": 1, "OPTIM": {"name": "adam", "lr": 0.01}},
        "ADVERSARIAL": {"LAMBDA": 0.1, "D_BASE_FILTERS": 2, "D_LR": 0.01},
    })


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_legacy_npy_dataset(tmp_path_factory.mktemp("adv"), n_train=2, n_val=1, n_test=0, shape=(16, 16, 16))


def test_adversarial_training_updates_both_and_logs_losses(data, tmp_path):
    run = tmp_path / "adv"
    cfg = cfg_for(data, ADV=True)
    fit(cfg.model_copy(update={"TRAINING": cfg.TRAINING.model_copy(update={"ITER_MAX": 2})}), "adv", run_dir=run)
    before = load_checkpoint(run / "checkpoints" / "last.pt")
    fit(cfg, "adv", resume=run)  # iterations 2 -> 4, discriminator state restored from the checkpoint
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert before["iteration"] == 2 and after["iteration"] == 4

    def changed(a: dict, b: dict) -> bool:
        return any(not torch.equal(a[k], b[k]) for k in a if a[k].dtype.is_floating_point)

    assert changed(before["adversarial"]["discriminator"], after["adversarial"]["discriminator"])
    assert changed(before["model"], after["model"])
    log = (run / "train.log").read_text()
    d_losses = [float(x) for x in re.findall(r"D loss ([-\d.]+)", log)]
    g_losses = [float(x) for x in re.findall(r"\] loss ([-\d.]+)", log)]
    assert len(d_losses) == 4 and len(g_losses) == 4
    assert all(math.isfinite(v) for v in d_losses + g_losses)
    assert any((run / "tensorboard").iterdir())


def test_finetune_from_init_model_with_mrf_and_arpm(data, tmp_path):
    run = tmp_path / "base"
    fit(cfg_for(data), "base", run_dir=run)
    cfg = cfg_for(data, ADV=True, INIT_MODEL=str(run / "checkpoints" / "last.pt"), MRF=True)
    fit(cfg, "ft", run_dir=tmp_path / "ft")
    log = (tmp_path / "ft" / "train.log").read_text()
    assert "INIT_MODEL" in log and "loaded" in log
    ck = load_checkpoint(tmp_path / "ft" / "checkpoints" / "last.pt")
    assert ck["model_spec"]["mrf"] is True and any(k.startswith("mrf.") for k in ck["model"])
    arpm = cfg_for(data, NAME="ARPM_net")
    summary = fit(arpm, "arpm", run_dir=tmp_path / "arpm")
    assert summary["iterations"] == 4 and math.isfinite(summary["best_mean_dice"])
