"""DDP on CPU (gloo) with two real processes: same weights on every rank, reduced validation metrics equal a
single-process evaluation, one writer, unanimous early stop, checkpoints that move between DDP and one process."""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from synth import make_legacy_npy_dataset

from rtseg.cli.main import main
from rtseg.config.loader import config_from_dict
from rtseg.io.checkpoint import load_checkpoint
from rtseg.training.checkpoint import unwrap
from rtseg.training.distributed import DistInfo

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (24, 24, 24)


def _config(data: Path, runs: Path, **training: Any) -> dict[str, Any]:
    model = training.pop("MODEL", {})
    parallel = training.pop("PARALLEL", True)
    return {
        "CUDA": False,
        "PARALLEL": parallel,
        "MODEL": {"BASE_FILTERS": 4, **model},
        "DATASET": {"PATH": str(data), "N_CLASSES": 6, "AUGMENT": False},
        "ADVERSARIAL": {"D_BASE_FILTERS": 4},
        "TRAINING": {"BATCH_SIZE": 1, "PRINT_INTERVAL": 1000, "RUNS_DIR": str(runs), "AMP": False, **training},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _JumpingClock:
    """``time`` for one rank whose monotonic clock leaps an hour ahead after a few readings (MAX_MINUTES on it alone)."""

    def __init__(self, after_calls: int) -> None:
        self.after = after_calls
        self.calls = 0

    def monotonic(self) -> float:
        self.calls += 1
        return time.monotonic() + (1e6 if self.calls > self.after else 0.0)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _ddp_worker(rank: int, world: int, port: int, cfg_data: dict[str, Any], out_dir: str, jump_rank: int) -> None:
    """One rank: run the real ``fit``, observing it from outside (spies on wrap_ddp / AdversarialStep, an audit hook)."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import rtseg.training.adversarial as adversarial
    import rtseg.training.trainer as trainer

    seen: dict[str, Any] = {}
    real_wrap = trainer.wrap_ddp

    def spy_wrap(model: torch.nn.Module, info: DistInfo, device: torch.device, sync_bn: bool) -> torch.nn.Module:
        seen["initial"] = {k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}  # before DDP's broadcast
        seen["model"] = real_wrap(model, info, device, sync_bn)
        return seen["model"]

    class SpyStep(adversarial.AdversarialStep):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen["adv"] = self

    trainer.wrap_ddp = spy_wrap  # type: ignore[assignment]
    adversarial.AdversarialStep = SpyStep  # type: ignore[misc]
    if rank == jump_rank:
        trainer.time = _JumpingClock(after_calls=4)  # type: ignore[assignment]

    watch = str(Path(cfg_data["TRAINING"]["RUNS_DIR"]))
    writes: list[str] = []
    recording = [True]

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if not recording[0]:
            return
        paths: list[Any] = []
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            paths = [path] if writing else []
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.symlink", "os.link"):
            paths = [args[0]]
        elif event == "os.rename":
            paths = [args[0], args[1]]
        for p in paths:
            if isinstance(p, (str, bytes, os.PathLike)) and os.fsdecode(p).startswith(watch):
                writes.append(f"{event} {os.fsdecode(p)}")

    sys.addaudithook(audit)
    summary = trainer.fit(config_from_dict(cfg_data), "tiny")
    recording[0] = False
    torch.save({
        "summary": summary,
        "initial": seen["initial"],
        "final": {k: v.detach().clone() for k, v in unwrap(seen["model"]).state_dict().items()},
        "disc": {k: v.detach().clone() for k, v in seen["adv"].discriminator.state_dict().items()},
        "writes": writes,
    }, Path(out_dir) / f"rank{rank}.pt")


def _launch(cfg_data: dict[str, Any], out_dir: Path, jump_rank: int, timeout: float) -> list[dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = mp.start_processes(_ddp_worker, args=(2, _free_port(), cfg_data, str(out_dir), jump_rank), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail(f"DDP ranks still running after {timeout:.0f} s: a rank is stuck in a collective")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> None:
    assert a.keys() == b.keys(), what
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{what}: {differ[:5]} differ"


def _assert_same_metrics(a: dict[str, Any], b: dict[str, Any]) -> None:
    def flat(m: dict[str, Any]) -> dict[str, float]:
        out = {k: v for k, v in m.items() if k not in ("dice", "iteration")}
        out.update({f"dice/{k}": v for k, v in m["dice"].items()})
        return out

    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert fa[k] == fb[k] or (math.isnan(fa[k]) and math.isnan(fb[k])), f"{k}: {fa[k]} != {fb[k]}"


@pytest.mark.slow
def test_ddp_two_ranks_agree_with_one_process(tmp_path: Path) -> None:
    from rtseg.models.spec import build_model, model_stride
    from rtseg.training.data_setup import prepare_training_data
    from rtseg.training.trainer import fit
    from rtseg.training.validate import validate

    data = make_legacy_npy_dataset(tmp_path / "data", n_train=2, n_val=3, n_test=0, shape=SHAPE)
    runs = tmp_path / "runs"
    adv_model = {"ADV": True}

    # A single-process checkpoint to start the DDP run from (INIT_MODEL across the boundary).
    single = fit(config_from_dict(_config(data, tmp_path / "single", PARALLEL=False, ITER_MAX=2, VAL_INTERVAL=2)), "single")
    init_ckpt = Path(single["run_dir"]) / "checkpoints" / "last.pt"
    init_state = load_checkpoint(init_ckpt)["model"]

    model_cfg = {**adv_model, "INIT_MODEL": str(init_ckpt)}
    cfg_data = _config(data, runs, MODEL=model_cfg, ITER_MAX=8, VAL_INTERVAL=2, MAX_MINUTES=60, SYNC_BN=True)
    r0, r1 = _launch(cfg_data, tmp_path / "ranks", jump_rank=1, timeout=150)
    s0, s1 = r0["summary"], r1["summary"]

    # Every rank loaded INIT_MODEL before DDP (nothing rank-dependent before the broadcast) ...
    _assert_same_state(r0["initial"], init_state, "rank 0 start vs INIT_MODEL")
    _assert_same_state(r1["initial"], init_state, "rank 1 start vs INIT_MODEL")
    # ... trained, and ended with identical weights, BatchNorm statistics and discriminator.
    assert any(not torch.equal(r0["final"][k], init_state[k]) for k in init_state), "no training step changed the weights"
    _assert_same_state(r0["final"], r1["final"], "segmenter rank 0 vs rank 1")
    _assert_same_state(r0["disc"], r1["disc"], "discriminator rank 0 vs rank 1")

    # MAX_MINUTES ran out on rank 1 only; both stopped together (otherwise rank 0 hangs in the next all_reduce).
    k = s0["iterations"]
    assert s1["iterations"] == k and 1 <= k < 8
    assert s0["stopped_early"] and s1["stopped_early"]
    assert s1["best_mean_dice"] == s0["best_mean_dice"] > -math.inf  # rank 0's best, reported on every rank

    # One run dir, chosen by rank 0 and written by rank 0 alone.
    run_dir = Path(s0["run_dir"])
    assert [p for p in (runs / "tiny").iterdir()] == [run_dir] and Path(s1["run_dir"]) == run_dir
    assert r1["writes"] == [], f"rank 1 wrote: {r1['writes'][:5]}"
    assert any(w.endswith(str(Path("checkpoints") / "last.pt")) for w in r0["writes"])
    assert "SYNC_BN ignored" in (run_dir / "train.log").read_text()

    # The checkpoint holds plain (no 'module.') keys = rank 0's final weights, at the stop iteration.
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == k and not any(key.startswith("module.") for key in ckpt["model"])
    _assert_same_state(ckpt["model"], r0["final"], "last.pt vs rank 0")

    # The reduced validation (cases split over ranks, confusion matrices summed) equals one process validating
    # the same prepared cases with the checkpoint: same code path minus the split, so integer counts agree exactly.
    cfg1 = config_from_dict(_config(data, runs, PARALLEL=False, MODEL=model_cfg, ITER_MAX=8))
    model = build_model(ckpt["model_spec"])
    model.load_state_dict(ckpt["model"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepared = prepare_training_data(cfg1, model_stride(model), ckpt.get("plan"))
        assert len(prepared.val) == 3
        cm = validate(model, prepared.val, tuple(ckpt["patch_size"]), 6, torch.device("cpu"), cfg1.TRAINING.VAL_OVERLAP, amp=False)
    finally:
        torch.set_num_threads(threads)
    assert int(cm.matrix.sum()) == 3 * math.prod(SHAPE)
    expected = cm.compute(cfg1.DATASET.class_names())
    _assert_same_metrics(s0["final"], expected)
    _assert_same_metrics(s1["final"], expected)
    import json

    _assert_same_metrics(json.loads((run_dir / "metrics.json").read_text())["final"], expected)

    # The DDP run resumes in one process (PARALLEL false) and keeps its history.
    resumed = fit(cfg1.model_copy(update={"TRAINING": cfg1.TRAINING.model_copy(update={"ITER_MAX": k + 2})}), "tiny",
                  resume=run_dir)
    assert resumed["iterations"] == k + 2
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == k + 2
    val_iters = [it for it, _ in json.loads((run_dir / "history.json").read_text())["val_mean_dice"]]
    assert val_iters[0] == 2 and val_iters[-1] == k + 2


@pytest.mark.slow
def test_torchrun_cli_rank_without_val_cases(tmp_path: Path) -> None:
    """The real launcher and CLI: two ranks, one validation case (rank 1 validates nothing but joins the reduction)."""
    data = make_legacy_npy_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=0, shape=SHAPE)
    runs = tmp_path / "runs"
    import yaml

    cfg_path = tmp_path / "ddp.yml"
    cfg_path.write_text(yaml.safe_dump(_config(data, runs, ITER_MAX=3, VAL_INTERVAL=2)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rtseg",
           "train", "-c", str(cfg_path)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (runs / "ddp").iterdir()
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iterations"] == 3 and metrics["final"]["iteration"] == 3
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == 3
    assert "best mean Dice" in proc.stdout and "-inf" not in proc.stdout


def test_parallel_without_torchrun_explains_launch_and_runs_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    import yaml

    cfg = tmp_path / "par.yml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path / "nowhere", tmp_path / "runs", ITER_MAX=1)))
    assert main(["train", "-c", str(cfg)]) == 2  # goes on in one process and fails on the missing data
    assert "not launched by torchrun" in caplog.text and "torchrun --nproc_per_node=N" in caplog.text
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rtseg train: error: DATASET.PATH")


def test_loader_shards_one_global_sample_sequence() -> None:
    """Per step, the ranks' batches together are the single-process batch of BATCH_SIZE x world (any start iteration)."""
    from rtseg.training.trainer import _Loader

    def batches(batch: int, world: int, rank: int, start: int, total: int) -> list[list[int]]:
        dataset = list(range(total * batch * world))
        loader = _Loader(dataset, batch, 0, start, DistInfo(rank, world, rank), seed=0)  # type: ignore[arg-type]
        return [list(b) for b in loader.loader.batch_sampler]  # type: ignore[union-attr]

    for start in (0, 3):
        one = batches(4, 1, 0, start, 7)
        per_rank = [batches(2, 2, r, start, 7) for r in range(2)]
        assert [len(b) for b in per_rank] == [7 - start] * 2
        assert [a + b for a, b in zip(*per_rank)] == one
        assert not set(sum(per_rank[0], [])) & set(sum(per_rank[1], []))
