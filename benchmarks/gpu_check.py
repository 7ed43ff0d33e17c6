"""The one prepared GPU check: every GPU figure rtseg needs, each step under its own time limit, 9 minutes in all.

Run by benchmarks/gpu_check.sh (which installs the carried wheels first). Steps, in order of
priority; a step starts only if its least useful time still fits in what is left of
``--budget`` after the least time of the required steps behind it:

    env                 torch, CUDA, GPU name (into check.log)
    train_step          benchmarks/train_step.py: rtseg's way vs the seed's way, 128^3 batch 2
    predict             benchmarks/predict.py: 512x512x160, network part and end to end, vs MONAI
    dicom_rtstruct      benchmarks/predict_dicom.py: DICOM series -> RTSTRUCT, one rtseg predict process
    openkbp             rtseg train (configs/openkbp.yml, TRAINING.MAX_MINUTES=3.5) + rtseg val
    train_step_compile  train_step.py --compile (if time is left)
    nnunet              benchmarks/vs_nnunet.py against the openkbp checkpoint (if nnunetv2 is there and time is left)

OUTDIR gets figures.jsonl (one JSON object per figure: name, value, unit, command, seconds;
a ``step.<name>`` record per step with its status), check.log, one log per step and the openkbp
step's checkpoint (openkbp_population.pt): at most 8 files, what a device call brings back (the
nnunet step, which would make a ninth, runs in a device call of its own). Runs and data go to ``--work``.
``--dry-run`` runs every step tiny on the CPU (seconds each) so the check is known to work.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_log import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
FIGURES = "figures.jsonl"


@dataclass
class Step:
    """One measuring step: commands run one after the other under one limit, then figures read from files."""

    name: str
    limit_s: float  # its own time limit
    min_s: float  # below this much time it is not worth starting
    commands: list[list[str]]
    required: bool = True
    skip: Optional[str] = None  # why it cannot run here
    after: Optional[Callable[[float], None]] = None  # reads figures from what the commands wrote (arg: step start)
    env: dict[str, str] = field(default_factory=dict)


def run_limited(cmd: list[str], log: Path, limit: float, env: dict[str, str]) -> int:
    """``cmd`` under ``limit`` seconds, output appended to ``log``; on time-out its whole process group is killed."""
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, limit))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            fh.write(f"\n[gpu_check] killed after {limit:.0f} s\n")
            return 124


def rtseg_sets(args: argparse.Namespace, data: Path) -> list[str]:
    """``--set`` overrides of configs/openkbp.yml for the 3.5-minute run (tiny on --dry-run)."""
    sets = {"DATASET.PATH": data, "DATASET.SPLITS": data / "splits.json", "DATASET.PARTIAL_LABELS": data / "train.json",
            "TRAINING.MAX_MINUTES": 3.5, "TRAINING.WORKERS": 8, "TRAINING.PRINT_INTERVAL": 250}
    if args.dry_run:
        sets.update({"CUDA": "false", "MODEL.BASE_FILTERS": 4, "DATASET.PATCH_SIZE": "[32,32,32]", "TRAINING.ITER_MAX": 2,
                     "TRAINING.LR_SCHEDULER.max_iter": 2, "TRAINING.LR_SCHEDULER.warmup_iters": 0,
                     "TRAINING.VAL_INTERVAL": 2, "TRAINING.WORKERS": 0, "TRAINING.MAX_MINUTES": 1.0,
                     "TRAINING.VAL_OVERLAP": 0.0, "TRAINING.PRINT_INTERVAL": 1})
    out = []
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


POPULATION_FILE = "openkbp_population.pt"  # the GPU-trained checkpoint, back for benchmarks/adapt.py --population
MAX_BACK_BYTES = 16 * 2 ** 20  # a file a device call brings back


def openkbp_figures(run: Path, fig: Path, command: str, t0: float) -> None:
    """Training summary (metrics.json) and rtseg val's per-organ Dice / HD95 (val_metrics.json, val_per_case.csv);
    the checkpoint itself goes beside the figures (``POPULATION_FILE``): the population model ``rtseg adapt`` is
    benchmarked with on the CPU afterwards (docs/ADAPT.md), trained on the split's train cases only."""
    import shutil

    seconds = time.monotonic() - t0
    best = run / "checkpoints" / "best.pt"
    if best.stat().st_size <= MAX_BACK_BYTES:
        shutil.copyfile(best, fig.parent / POPULATION_FILE)
    summary = json.loads((run / "metrics.json").read_text())
    record(fig, "openkbp.train.iterations", summary["iterations"], "iterations", seconds, command=command)
    record(fig, "openkbp.train.seconds", summary["seconds"], "s", seconds, command=command)
    val = json.loads((run / "val_metrics.json").read_text())
    record(fig, "openkbp.val.mean_dice", val["mean_dice"], "Dice", seconds, command=command,
           note="seed's confusion-matrix Dice over the val cases, organs averaged")
    for organ, d in val["dice"].items():
        record(fig, f"openkbp.val.dice.{organ}", d, "Dice", seconds, command=command)
    per: dict[tuple[str, str], list[float]] = {}
    with open(run / "val_per_case.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["metric"] in ("dice", "hd95") and math.isfinite(value := float(row["value"] or "nan")):
                per.setdefault((row["organ"], row["metric"]), []).append(value)
    for (organ, metric), values in sorted(per.items()):
        record(fig, f"openkbp.val.case_{metric}_median.{organ}", statistics.median(values),
               "mm" if metric == "hd95" else "Dice", seconds, command=command, n=len(values))


def build_steps(args: argparse.Namespace, data: Optional[Path], fig: Path) -> list[Step]:
    py, dry = [args.python], args.dry_run
    dev = "cpu" if dry else "cuda"
    small = ["--shape", "256", "256", "32", "--target-spacing", "3.92", "3.92", "5", "--roi", "32", "32", "16"]
    ts = [*py, str(BENCH / "train_step.py"), "--device", dev, "--figures", str(fig)]
    ts_small = ["--size", "32", "--batch", "1", "--steps", "1", "--base-filters", "4"]
    run = args.work / "openkbp"
    sets = rtseg_sets(args, data) if data else []
    train = [*py, "-m", "rtseg", "train", "-c", str(REPO / "configs" / "openkbp.yml"), "--run-dir", str(run), *sets]
    val = [*py, "-m", "rtseg", "val", "-c", str(REPO / "configs" / "openkbp.yml"), *sets,
           "--checkpoint", str(run / "checkpoints" / "best.pt"), "--out", str(run)] + (["--overlap", "0"] if dry else [])
    steps = [
        Step("train_step", 75, 20, [ts + (ts_small + ["--models", "ResUnet_3D"] if dry else [])]),
        Step("predict", 90, 30, [[*py, str(BENCH / "predict.py"), "--device", dev, "--repeat", "1" if dry else "3",
                                  "--figures", str(fig), *(small if dry else [])]]),
        Step("dicom_rtstruct", 75, 25, [[*py, str(BENCH / "predict_dicom.py"), "--device", dev, "--figures", str(fig),
                                         *(small if dry else [])]]),
        Step("openkbp", 330, 270, [train, val], skip=None if data else "no OpenKBP data (make gpu-data)",
             after=lambda t0: openkbp_figures(run, fig, " ".join(train), t0), env={"TQDM_MININTERVAL": "10"}),
        Step("train_step_compile", 150, 60, [ts + ["--compile", "--models", "ResUnet_3D"] + (ts_small if dry else [])],
             required=False, skip="torch.compile needs a GPU here" if dry else None),
        Step("nnunet", 420, 300, [nnunet_command(args, data, run, fig)], required=False, skip=nnunet_skip(args, data)),
    ]
    if dry:  # the dry run checks that each step works, not how fast: room for a loaded CI machine
        for step in steps:
            step.limit_s, step.min_s = 4 * step.limit_s, 0.0
    return steps


def nnunet_command(args: argparse.Namespace, data: Optional[Path], run: Path, fig: Path) -> list[str]:
    splits = str(data / "splits.json") if data else ""
    return [args.python, str(BENCH / "vs_nnunet.py"), "--data", str(data), "--splits", splits,
            "--device", "cuda", "--seconds", "210", "--work", str(args.work / "vs_nnunet"), "--nnunet-python", args.python,
            "--rtseg-checkpoint", str(run / "checkpoints" / "last.pt"), "--processes", "8", "--figures", str(fig)]


def nnunet_skip(args: argparse.Namespace, data: Optional[Path]) -> Optional[str]:
    """Why the nnU-Net side by side cannot run in this check (None: it can)."""
    if args.dry_run:
        return "dry run: benchmarks/vs_nnunet.py --smoke is the CPU run of this harness"
    if data is None:
        return "no OpenKBP data"
    probe = subprocess.run([args.python, "-c", "import nnunetv2, SimpleITK"], capture_output=True, text=True)
    return None if probe.returncode == 0 else "nnunetv2/SimpleITK not importable (carry .whl-nnunet: make gpu-wheels-nnunet)"


def run_steps(steps: list[Step], args: argparse.Namespace, fig: Path, check_log: Path) -> None:
    deadline = time.monotonic() + args.budget
    for i, step in enumerate(steps):
        reserve = sum(s.min_s for s in steps[i + 1:] if s.required and s.skip is None and s.name not in args.skip)
        left = deadline - time.monotonic() - reserve
        limit = min(step.limit_s, left)
        reason = step.skip or ("--skip" if step.name in args.skip else None)
        if reason is None and limit < step.min_s:
            reason = f"out of time ({left:.0f} s left for it, needs {step.min_s:.0f} s)"
        if reason:
            record(fig, f"step.{step.name}", None, "s", 0.0, command="", status="skipped", reason=reason)
            log_line(check_log, f"{step.name}: skipped: {reason}")
            continue
        t0 = time.monotonic()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **step.env)
        rc = 0
        for cmd in step.commands:
            rc = run_limited(cmd, args.out / f"{step.name}.log", deadline_left(t0, limit), env)
            if rc != 0:
                break
        status = {0: "ok", 124: "timeout"}.get(rc, "failed")
        if rc == 0 and step.after is not None:
            try:
                step.after(t0)
            except (OSError, KeyError, ValueError) as exc:
                status = f"figures missing: {exc}"
        seconds = time.monotonic() - t0
        record(fig, f"step.{step.name}", seconds, "s", seconds, command=" ; ".join(" ".join(c) for c in step.commands),
               status=status, rc=rc, limit_s=round(limit, 1))
        log_line(check_log, f"{step.name}: {status} (rc {rc}) in {seconds:.1f} s of {limit:.0f} s")


def deadline_left(t0: float, limit: float) -> float:
    return limit - (time.monotonic() - t0)


def log_line(path: Path, text: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    with open(path, "a") as fh:
        fh.write(line + "\n")


def environment(args: argparse.Namespace, check_log: Path) -> None:
    """torch / CUDA / GPU facts and nvidia-smi into check.log (the figures' context)."""
    probe = ("import torch, platform; print('python', platform.python_version(), 'torch', torch.__version__, "
             "'cuda', torch.version.cuda, 'available', torch.cuda.is_available()); "
             "torch.cuda.is_available() and print('gpu', torch.cuda.get_device_name(0))")
    run_limited([args.python, "-c", probe], check_log, 60, dict(os.environ))
    if not args.dry_run:
        run_limited(["nvidia-smi"], check_log, 20, dict(os.environ))


def prepare_data(args: argparse.Namespace) -> Optional[Path]:
    """The OpenKBP cases: --data, else .gpudata/openkbp; on --dry-run a 4 + 2 case subset made from them."""
    source = args.data or next((p for p in (REPO / ".gpudata" / "openkbp", REPO.parent / "shared" / "data" / "openkbp" /
                                            "train") if (p / "train.json").is_file()), None)
    if source is None or not args.dry_run:
        return source
    tiny = args.work / "data"
    splits = source / "splits.json" if (source / "splits.json").is_file() else REPO / "configs" / "openkbp_splits.json"
    subprocess.run([args.python, str(BENCH / "gpu_data.py"), "--source", str(source), "--splits", str(splits),
                    "--out", str(tiny), "--train", "4", "--val", "2"], check=True, stdout=subprocess.DEVNULL)
    return tiny


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, metavar="OUTDIR", help="figures.jsonl and logs go here")
    ap.add_argument("--dry-run", action="store_true", help="every step tiny on the CPU (to know the check works)")
    ap.add_argument("--budget", type=float, default=540.0, help="seconds for all steps (default 540: 9 minutes)")
    ap.add_argument("--work", type=Path, help="runs and data (default OUTDIR/../gpu_check_work)")
    ap.add_argument("--data", type=Path, help="OpenKBP folder with splits.json (default .gpudata/openkbp)")
    ap.add_argument("--skip", nargs="*", default=[], metavar="STEP", help="steps to leave out (e.g. openkbp)")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs every step (default this one)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work = (args.work or args.out.resolve().parent / "gpu_check_work").resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        args.budget = max(args.budget, 3600.0)  # tiny steps; their own limits still hold
    fig, check_log = args.out / FIGURES, args.out / "check.log"
    fig.unlink(missing_ok=True)
    environment(args, check_log)
    data = prepare_data(args)
    log_line(check_log, f"budget {args.budget:.0f} s; data {data}; work {args.work}; dry run {args.dry_run}")
    run_steps(build_steps(args, data, fig.resolve()), args, fig.resolve(), check_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
