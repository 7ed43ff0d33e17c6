"""Training reliability: config rejected before data, non-finite guard, kill -9 and resume, the GPU path on the CPU."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from synth import make_legacy_npy_dataset

import rtseg.training.trainer as trainer_module
from rtseg.config import config_from_dict
from rtseg.data.sampling import PatchDataset
from rtseg.errors import ConfigError
from rtseg.io.checkpoint import load_checkpoint
from rtseg.models.spec import model_stride
from rtseg.training.guards import TrainingDiverged
from rtseg.training.trainer import fit

ROOT = Path(__file__).resolve().parents[1]


def _cfg(data: Path, runs: Path, model: dict[str, Any] | None = None, **training: Any) -> dict[str, Any]:
    return {
        "CUDA": False,
        "MODEL": {"BASE_FILTERS": 2, **(model or {})},
        "DATASET": {"PATH": str(data), "N_CLASSES": 6, "AUGMENT": False, "NORMALIZE": "ct_window"},
        "ADVERSARIAL": {"D_BASE_FILTERS": 2},
        "TRAINING": {"BATCH_SIZE": 1, "PRINT_INTERVAL": 1, "VAL_INTERVAL": 1, "RUNS_DIR": str(runs), "AMP": False, **training},
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_legacy_npy_dataset(tmp_path_factory.mktemp("rel"), n_train=2, n_val=1, n_test=0, shape=(16, 16, 16))


def test_adversarial_with_partial_labels_rejected_before_any_data_is_read(tmp_path: Path) -> None:
    for key, value in (("ABSENT_IS_UNKNOWN", True), ("PARTIAL_LABELS", str(tmp_path / "partial.json"))):
        raw = _cfg(tmp_path / "no-such-dataset", tmp_path / "runs", {"ADV": True}, ITER_MAX=1)
        raw["DATASET"][key] = value
        with pytest.raises(ConfigError, match=f"MODEL.ADV with partial labels \\(DATASET.{key}\\)"):
            fit(config_from_dict(raw), "adv", run_dir=tmp_path / "run")  # the dataset path does not even exist
        assert not (tmp_path / "run").exists()  # nor was a run directory created


def _poison(monkeypatch: pytest.MonkeyPatch, case_index: int) -> list[str]:
    """NaN in one prepared training case, after the io readers (the guard must not rely on them)."""
    real = trainer_module.prepare_training_data
    poisoned: list[str] = []

    def prepare(*args: Any, **kwargs: Any) -> Any:
        prepared = real(*args, **kwargs)
        prepared.train[case_index].image[:] = np.nan
        poisoned.append(prepared.train[case_index].case_id)
        return prepared

    monkeypatch.setattr(trainer_module, "prepare_training_data", prepare)
    return poisoned


def _sampled_cases(data: Path, runs: Path, n: int) -> list[int]:
    """Which training case each of the first ``n`` batches (batch 1) draws: the sampler is replayable."""
    from rtseg.training.data_setup import prepare_training_data
    from rtseg.training.trainer import build_network

    cfg = config_from_dict(_cfg(data, runs, ITER_MAX=n))
    prepared = prepare_training_data(cfg, model_stride(build_network(cfg)[0]))
    dataset = PatchDataset(prepared.train, prepared.patch_size, cfg.DATASET.FG_OVERSAMPLE, length=n, seed=cfg.TRAINING.SEED)
    return [dataset.params(i).case for i in range(n)]


def test_nonfinite_loss_stops_naming_iteration_and_case_and_keeps_last_checkpoint(data: Path, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    sampled = _sampled_cases(data, tmp_path / "runs", 8)
    bad_case = 1 - sampled[0]  # the first batch is clean, so a checkpoint exists before the bad one
    first_bad = sampled.index(bad_case) + 1  # 1-based training iteration
    poisoned = _poison(monkeypatch, bad_case)
    cfg = config_from_dict(_cfg(data, tmp_path / "runs", ITER_MAX=8))
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as exc:
        fit(cfg, "nan", run_dir=run)
    msg = str(exc.value)
    assert f"training iteration {first_bad}: non-finite loss nan" in msg and poisoned[0] in msg
    assert f"checkpoints/last.pt (iteration {first_bad - 1}) is intact" in msg and "--resume" in msg
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["iteration"] == first_bad - 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.dtype.is_floating_point)
    monkeypatch.undo()  # the data fixed: the run resumes from the intact checkpoint and finishes
    summary = fit(cfg, "nan", resume=run)
    assert summary["iterations"] == 8 and summary["skipped_steps"] == 0
    assert f"resuming at iteration {first_bad - 1}" in (run / "train.log").read_text()


def test_nonfinite_steps_can_be_skipped_and_counted(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sampled = _sampled_cases(data, tmp_path / "runs", 8)
    _poison(monkeypatch, 1)
    cfg = config_from_dict(_cfg(data, tmp_path / "runs", ITER_MAX=8, NONFINITE="skip"))
    summary = fit(cfg, "skip", run_dir=tmp_path / "run")
    n_bad = sampled.count(1)
    assert 0 < n_bad < 8 and summary["iterations"] == 8 and summary["skipped_steps"] == n_bad
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert last["skipped_steps"] == n_bad
    # weights, optimizer moments and BatchNorm statistics never saw the NaN batches
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.dtype.is_floating_point)
    moments = [t for s in last["optimizer"]["state"].values() for t in s.values() if torch.is_tensor(t) and t.numel() > 1]
    assert moments and all(torch.isfinite(t).all() for t in moments)
    assert f"{n_bad} non-finite steps skipped" in (tmp_path / "run" / "train.log").read_text()


# -- crash safety -------------------------------------------------------------

CRASH_ITERS = 30


def _launch(cfg_path: Path, run: Path, resume: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"), "TQDM_DISABLE": "1"}
    env.pop("RTSEG_FORCE_GPU_PATH", None)
    cmd = [sys.executable, "-m", "rtseg", "train", "-c", str(cfg_path)]
    cmd += ["--resume", str(run)] if resume else ["--run-dir", str(run)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _log_size(run: Path) -> int:
    return (run / "train.log").stat().st_size if (run / "train.log").exists() else 0


def _wait_for_iteration(proc: subprocess.Popen[bytes], run: Path, offset: int, iteration: int, timeout: float = 120) -> None:
    """Until the process has logged training iteration ``iteration`` (PRINT_INTERVAL 1) or exits."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if (run / "train.log").exists():
            logged = re.findall(rb"\[iter (\d+)/", (run / "train.log").read_bytes()[offset:])
            if logged and int(logged[-1]) >= iteration:
                return
        time.sleep(0.005)


def _finish(proc: subprocess.Popen[bytes], timeout: float) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()[-2000:]


def _saved_iteration(run: Path) -> int | None:
    """The iteration of last.pt, after checking every checkpoint in the run is readable."""
    ckpts = run / "checkpoints"
    for name in ("best.pt", "last.pt"):
        if (ckpts / name).exists():
            load_checkpoint(ckpts / name)  # raises on a torn or unreadable file
    return int(load_checkpoint(ckpts / "last.pt")["iteration"]) if (ckpts / "last.pt").exists() else None


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_uninterrupted_run(data: Path, tmp_path: Path) -> None:
    """10 SIGKILLs at random moments of training (fixed seed): each resume starts at last.pt's iteration, no checkpoint
    is ever unreadable, and the final weights, history and best checkpoint equal those of an uninterrupted run."""
    raw = _cfg(data, tmp_path / "runs", {"DROPOUT": 0.2}, ITER_MAX=CRASH_ITERS, VAL_INTERVAL=2)
    raw["DATASET"]["AUGMENT"] = True  # dropout and augmentation: both random sources must replay after a resume
    cfg_path = tmp_path / "crash.yml"
    cfg_path.write_text(yaml.safe_dump(raw))
    reference = tmp_path / "reference"
    _finish(_launch(cfg_path, reference, resume=False), timeout=120)

    # Each try: start (or resume), let it train 1-5 iterations past its checkpoint, then SIGKILL it 0-60 ms later:
    # before, during or after a checkpoint write, whatever the machine's speed.
    run, rng, kills, resumed_from = tmp_path / "crashed", np.random.default_rng(12), 0, []
    while kills < 10:
        saved = _saved_iteration(run) if run.exists() else None
        offset = _log_size(run)
        proc = _launch(cfg_path, run, resume=saved is not None)
        _wait_for_iteration(proc, run, offset, (saved or 0) + int(rng.integers(1, 6)))
        time.sleep(float(rng.uniform(0.0, 0.06)))
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
        kills += 1
        if saved is not None:
            assert f"resuming at iteration {saved}\n" in (run / "train.log").read_bytes()[offset:].decode()
            resumed_from.append(saved)
        after = _saved_iteration(run)  # every checkpoint readable after every kill
        assert saved is None or (after is not None and after >= saved)
    if _saved_iteration(run) != CRASH_ITERS:
        _finish(_launch(cfg_path, run, resume=True), timeout=120)
    assert len(set(resumed_from)) >= 5, f"resumed from {resumed_from}: the kills did not spread over the run"
    assert not list((run / "checkpoints").glob(".*.tmp*")), "a killed write's temp file was left behind"

    ref, got = load_checkpoint(reference / "checkpoints" / "last.pt"), load_checkpoint(run / "checkpoints" / "last.pt")
    assert got["iteration"] == ref["iteration"] == CRASH_ITERS
    differ = [k for k in ref["model"] if not torch.equal(ref["model"][k], got["model"][k])]
    assert not differ, f"weights differ from the uninterrupted run: {differ[:5]}"
    assert json.dumps(got["history"]) == json.dumps(ref["history"]) and got["best_metric"] == ref["best_metric"]
    best_ref, best_got = (load_checkpoint(r / "checkpoints" / "best.pt") for r in (reference, run))
    assert best_got["iteration"] == best_ref["iteration"]
    assert all(torch.equal(best_ref["model"][k], best_got["model"][k]) for k in best_ref["model"])


def test_history_values_are_finite_numbers_or_nan(data: Path, tmp_path: Path) -> None:
    """history.json stays JSON the crash test can compare: [iteration, value] pairs."""
    summary = fit(config_from_dict(_cfg(data, tmp_path / "runs", ITER_MAX=2)), "h", run_dir=tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [it for it, _ in history["train_loss"]] == [1, 2] and [it for it, _ in history["val_mean_dice"]] == [1, 2]
    assert all(isinstance(v, float) and (math.isfinite(v) or math.isnan(v)) for _, v in history["val_mean_dice"])
    assert summary["iterations"] == 2
