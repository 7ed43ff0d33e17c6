"""Class-balanced patch sampling (DATASET.FG_SAMPLING) and the budget-aware LR schedule (TRAINING.TIME_SCHEDULE)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtseg.config.schema import OptimConfig, SchedulerConfig
from rtseg.data.cases import PreparedCase, foreground_voxels
from rtseg.data.sampling import PatchDataset, class_index
from rtseg.training.optim import ScheduleClock, build_optimizer, build_scheduler, lr_factor_fn

PATCH = (8, 8, 8)


def _cases() -> list[PreparedCase]:
    """8 cases; class 1 contoured in all of them, class 2 in 2 of 8 (a partially contoured organ)."""
    out = []
    for i in range(8):
        label = np.zeros((24, 24, 24), np.uint8)
        label[2:10, 2:10, 2:10] = 1
        known = np.array([True, True, i < 2])
        if known[2]:
            label[14:18, 14:18, 14:18] = 2
        fg = foreground_voxels(label, 3, np.random.default_rng(i))
        out.append(PreparedCase(f"c{i}", np.zeros(label.shape, np.float32), label, known, (1.0, 1.0, 1.0), fg))
    return out


def _organ_at_centre(ds: PatchDataset, n: int) -> np.ndarray:
    """How often a patch holds class 1 / class 2 voxels (the organ it was centred on)."""
    counts = np.zeros(3)
    for i in range(n):
        prm = ds.params(i)
        lab = ds.cases[prm.case].label
        sl = tuple(slice(max(s, 0), max(s, 0) + p) for s, p in zip(prm.start, PATCH))
        present = np.unique(lab[sl])
        for c in (1, 2):
            counts[c] += c in present
    return counts / n


def test_class_index_lists_the_cases_contouring_each_organ() -> None:
    idx = class_index(_cases())
    assert idx == {1: list(range(8)), 2: [0, 1]}


def test_class_balanced_sampling_centres_a_rare_organ_as_often_as_a_common_one() -> None:
    cases = _cases()
    by_case = _organ_at_centre(PatchDataset(cases, PATCH, 1.0, 4000, seed=3), 4000)
    by_class = _organ_at_centre(PatchDataset(cases, PATCH, 1.0, 4000, seed=3, class_balanced=True), 4000)
    # by case: class 2 only when one of its 2 cases is drawn (1/4) and then it (1/2): ~1/8 of the patches
    assert by_case[2] == pytest.approx(1 / 8, abs=0.03)
    # by class: half the patches are centred on class 2 (patches of 8^3 never reach both organs)
    assert by_class[2] == pytest.approx(0.5, abs=0.03) and by_class[1] == pytest.approx(0.5, abs=0.03)


def test_class_balanced_samples_replay_and_respect_the_oversampling_rate() -> None:
    cases = _cases()
    ds = PatchDataset(cases, PATCH, 0.0, 100, seed=1, class_balanced=True)
    assert [ds.params(i) for i in range(20)] == [ds.params(i) for i in range(20)]
    # FG_OVERSAMPLE 0: uniform starts only, so the small class-2 cube is rarely in a patch
    assert _organ_at_centre(PatchDataset(cases, PATCH, 0.0, 3000, seed=1, class_balanced=True), 3000)[2] < 0.12


def test_schedule_clock_runs_the_schedule_ahead_of_the_iteration() -> None:
    cfg = SchedulerConfig(name="poly_lr", max_iter=100, warmup_iters=0)
    clock = ScheduleClock()
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimConfig(name="sgd", lr=1.0))
    sched = build_scheduler(opt, cfg, 100, clock)
    factor = lr_factor_fn(cfg, 1.0, iter_max=100)
    for it in range(1, 11):
        clock.ahead = it * 9  # the budget runs ~9x faster than the iterations
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(factor(max(it, it * 9)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1**0.9)  # poly (1 - 0.9)^0.9: 90 % through the budget at it 10
    clock.ahead = 0
    assert clock(42) == 42  # never behind the iteration


class _FakeClock:
    """``time`` for the trainer whose monotonic clock moves 1 s per reading: a budget of seconds, run in milliseconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        import time

        return getattr(time, name)


@pytest.mark.parametrize("time_schedule", [True, False])
def test_a_budgeted_run_ends_annealed_only_with_the_time_schedule(tmp_path, monkeypatch, time_schedule: bool) -> None:
    import rtseg.training.trainer as trainer
    from rtseg.config.loader import config_from_dict
    from synth import make_legacy_npy_dataset

    data = make_legacy_npy_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=0, shape=(24, 24, 24))
    cfg = config_from_dict({
        "CUDA": False, "MODEL": {"BASE_FILTERS": 4}, "DATASET": {"PATH": str(data), "N_CLASSES": 6, "AUGMENT": False},
        "TRAINING": {"BATCH_SIZE": 1, "PRINT_INTERVAL": 1, "VAL_INTERVAL": 10_000, "ITER_MAX": 10_000, "AMP": False,
                     "RUNS_DIR": str(tmp_path / "runs"), "MAX_MINUTES": 0.5, "TIME_SCHEDULE": time_schedule,
                     "OPTIM": {"name": "adamw", "lr": 0.01}, "LR_SCHEDULER": {"name": "poly_lr"}},
    })
    monkeypatch.setattr(trainer, "time", _FakeClock())
    summary = trainer.fit(cfg, "budget")
    assert summary["stopped_early"] and 5 < summary["iterations"] < 30  # the 30 s budget, 1 s per clock reading
    history = json.loads((Path(summary["run_dir"]) / "history.json").read_text())
    lrs = [lr for _, lr in history["lr"]]
    if time_schedule:  # poly to the budget's end: the last LR a small fraction of the peak, falling all along
        assert lrs[-1] < 0.15 * 0.01 and all(a >= b for a, b in zip(lrs, lrs[1:]))
    else:  # poly aimed at ITER_MAX = 10000: still at the peak when the budget stops the run
        assert lrs[-1] > 0.99 * 0.01


def test_channels_last_always_trains_in_ndhwc_on_the_cpu(tmp_path, monkeypatch) -> None:
    """CHANNELS_LAST 'always': the CPU step runs in channels-last 3D (faster for narrow U-Nets) with the same losses."""
    import rtseg.training.trainer as trainer
    from rtseg.config.loader import config_from_dict
    from rtseg.device import memory_format
    from synth import make_legacy_npy_dataset

    cpu = torch.device("cpu")
    assert memory_format(cpu, "always") == torch.channels_last_3d
    assert memory_format(cpu, True, force=False) == torch.contiguous_format  # true: the GPU path only
    assert memory_format(cpu, False, force=True) == torch.contiguous_format
    chosen: list[torch.memory_format] = []

    def spy(device: torch.device, channels_last, force=None):  # type: ignore[no-untyped-def]
        chosen.append(memory_format(device, channels_last, force))
        return chosen[-1]

    monkeypatch.setattr(trainer, "memory_format", spy)
    data = make_legacy_npy_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=0, shape=(24, 24, 24))
    losses = {}
    for fmt in ("always", False):
        cfg = config_from_dict({
            "CUDA": False, "MODEL": {"BASE_FILTERS": 4}, "DATASET": {"PATH": str(data), "N_CLASSES": 6, "AUGMENT": False},
            "TRAINING": {"BATCH_SIZE": 1, "PRINT_INTERVAL": 1, "VAL_INTERVAL": 3, "ITER_MAX": 3, "AMP": False,
                         "RUNS_DIR": str(tmp_path / "runs"), "CHANNELS_LAST": fmt}})
        summary = trainer.fit(cfg, f"cl_{fmt}")
        losses[fmt] = [v for _, v in json.loads((Path(summary["run_dir"]) / "history.json").read_text())["train_loss"]]
    assert chosen == [torch.channels_last_3d, torch.contiguous_format]
    assert len(losses["always"]) == 3 and np.allclose(losses["always"], losses[False], rtol=1e-3)


def test_time_schedule_without_a_budget_is_refused_naming_both_keys() -> None:
    from rtseg.config.schema import TrainingConfig

    with pytest.raises(ValueError, match="TIME_SCHEDULE: true needs MAX_MINUTES"):
        TrainingConfig(TIME_SCHEDULE=True)
    assert TrainingConfig(TIME_SCHEDULE=True, MAX_MINUTES=5).TIME_SCHEDULE
