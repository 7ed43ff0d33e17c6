"""The GPU code path (bf16 autocast, channels-last 3D, torch.compile) run on the CPU, checked against fp32.

RTSEG_FORCE_GPU_PATH=1 makes ``rtseg.device`` take on the CPU the path a GPU takes, so this file
runs the same training step, validation and sliding window code a GPU runs. Tolerances: bf16 keeps
8 significant bits (relative rounding 2**-9); through the tiny U-Net the sliding-window logits must stay
within 2 % of their fp32 range (measured 0.5 %), the loss within 0.5 % (measured 0.03 %) and the
gradients at cosine similarity >= 0.999 (measured 0.99999).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from synth import make_legacy_npy_dataset

from rtseg.config import config_from_dict
from rtseg.device import FORCE_GPU_PATH_ENV, autocast, gpu_path, memory_format
from rtseg.training.distributed import DistInfo
from rtseg.training.trainer import Trainer, fit
from rtseg.training.validate import window_logits

CPU = torch.device("cpu")


def _cfg(data: Path, runs: Path, **training: Any) -> dict[str, Any]:
    return {
        "CUDA": False,
        "MODEL": {"BASE_FILTERS": 4, "DROPOUT": 0.0},
        "DATASET": {"PATH": str(data), "N_CLASSES": 6, "AUGMENT": False, "NORMALIZE": "ct_window", "PATCH_SIZE": [32, 32, 32]},
        "TRAINING": {"BATCH_SIZE": 2, "PRINT_INTERVAL": 1, "VAL_INTERVAL": 1, "RUNS_DIR": str(runs), "AMP": True,
                     "CHANNELS_LAST": True, "ITER_MAX": 2, "OPTIM": {"name": "adam", "lr": 0.001}, **training},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 40^3 volumes and 32^3 patches (a 2-voxel bottleneck): validation slides several overlapping windows
    return make_legacy_npy_dataset(tmp_path_factory.mktemp("gpu"), n_train=2, n_val=1, n_test=0, shape=(40, 40, 40))


def test_switch_by_environment_or_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    conv = torch.nn.Conv3d(1, 2, 3)
    x = torch.randn(1, 1, 6, 6, 6)
    monkeypatch.delenv(FORCE_GPU_PATH_ENV, raising=False)
    assert not gpu_path(CPU) and memory_format(CPU, True) == torch.contiguous_format
    with autocast(CPU, True):
        assert conv(x).dtype == torch.float32
    monkeypatch.setenv(FORCE_GPU_PATH_ENV, "1")
    assert gpu_path(CPU) and memory_format(CPU, True) == torch.channels_last_3d
    with autocast(CPU, True):
        assert conv(x).dtype == torch.bfloat16
    with autocast(CPU, False):  # TRAINING.AMP false / --amp off still wins
        assert conv(x).dtype == torch.float32
    assert memory_format(CPU, False) == torch.contiguous_format
    assert not gpu_path(CPU, force=False) and gpu_path(torch.device("cpu"), force=True)  # the argument wins over the env


def _channels_last(t: torch.Tensor) -> bool:
    """Strictly channels-last (with C > 1 the two layouts differ)."""
    return t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()


def _trainer(cfg: dict[str, Any], run: Path, forced: bool, monkeypatch: pytest.MonkeyPatch) -> Trainer:
    monkeypatch.setenv(FORCE_GPU_PATH_ENV, "1" if forced else "0")
    trainer = Trainer(config_from_dict(cfg), run, DistInfo())
    trainer.setup()
    return trainer


def test_training_step_validation_and_sliding_window_match_fp32(data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(data, tmp_path / "runs")
    out: dict[bool, dict[str, Any]] = {}
    for forced in (False, True):
        trainer = _trainer(cfg, tmp_path / f"run{int(forced)}", forced, monkeypatch)
        seen: dict[str, Any] = {}
        first_conv = next(m for m in trainer.state.model.modules() if isinstance(m, torch.nn.Conv3d))
        hook = first_conv.register_forward_hook(
            lambda m, inp, res: seen.update(dtype=res.dtype, channels_last=_channels_last(res)))
        try:
            case = trainer.data.val[0]
            trainer.state.model.eval()
            logits = window_logits(trainer.state.model, case.image, trainer.data.patch_size, 6, CPU, 0.5, True,
                                   memory_format=trainer.memory_format)
            val_path = dict(seen)
            trainer.state.model.train()
            trainer.train_step(next(iter(trainer.loader)))
            out[forced] = {"logits": logits, "val": val_path, "train": dict(seen), "loss": float(trainer.running),
                           "grads": torch.cat([p.grad.flatten() for p in trainer.params if p.grad is not None])}
            trainer.validate()  # the loop's own validation on this path runs too
            assert trainer.last_metrics["iteration"] == 1
        finally:
            hook.remove()
            trainer.close()
    fp32, fast = out[False], out[True]
    assert fp32["val"] == fp32["train"] == {"dtype": torch.float32, "channels_last": False}
    assert fast["val"] == fast["train"] == {"dtype": torch.bfloat16, "channels_last": True}  # the GPU path, really taken
    scale = float(fp32["logits"].abs().max())
    assert float((fast["logits"] - fp32["logits"]).abs().max()) <= 0.02 * scale  # measured 0.5 %
    assert fast["loss"] == pytest.approx(fp32["loss"], rel=0.005)  # measured 0.03 %
    cosine = torch.nn.functional.cosine_similarity(fast["grads"], fp32["grads"], dim=0)
    assert float(cosine) >= 0.999  # measured 0.99999


def test_fit_on_the_forced_gpu_path(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FORCE_GPU_PATH_ENV, "1")
    summary = fit(config_from_dict(_cfg(data, tmp_path / "runs")), "gpu", run_dir=tmp_path / "run")
    assert summary["iterations"] == 2 and summary["final"]["iteration"] == 2


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RTSEG_TEST_COMPILE") != "1",
                    reason="torch.compile on the CPU builds C++ kernels: this test passed in 332 s on the 2-core machine "
                           "with an empty inductor cache (83 s warm), too long for every run; set RTSEG_TEST_COMPILE=1 to run it")
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="no C++ compiler: torch.compile (inductor) cannot build CPU kernels")
def test_fit_compiled_on_the_forced_gpu_path(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FORCE_GPU_PATH_ENV, "1")
    eager = fit(config_from_dict(_cfg(data, tmp_path / "runs")), "eager", run_dir=tmp_path / "eager")
    compiled = fit(config_from_dict(_cfg(data, tmp_path / "runs", COMPILE=True)), "compiled", run_dir=tmp_path / "compiled")
    assert compiled["iterations"] == 2
    assert compiled["final"]["mean_dice"] == pytest.approx(eager["final"]["mean_dice"], abs=0.05)
