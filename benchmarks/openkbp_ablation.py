"""Small-organ ablation on OpenKBP: each change alone against one baseline, same budget, same split.

Every variant is the README's CPU command (`rtseg train -c configs/openkbp.yml ...`) with one group of
`--set` overrides, trained for the same wall-clock budget with the LR schedule annealed to that budget
(TRAINING.TIME_SCHEDULE), then scored by `rtseg val` on the original grids of the 34 validation
cases. Runs go through the command line exactly as a user would run them, `--parallel` at a time
with `--threads` torch threads each.

    python benchmarks/openkbp_ablation.py --minutes 15 --threads 1 --parallel 2 --out /tmp/abl
    python benchmarks/openkbp_ablation.py --only baseline sampling --minutes 15 --out /tmp/abl

The class-weighted rows run with `prior_correction=false`, as they were measured (before the
correction existed); `benchmarks/prior_correction.py` scores one checkpoint with and without it.

Prints a Markdown table (mean Dice per organ, mean over organs, iterations) and writes
<out>/ablation.json. Needs ../shared/data/openkbp.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean, median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "openkbp.yml"
DATA = ROOT.parent / "shared" / "data" / "openkbp" / "train"

BASE = ["CUDA=false", "MODEL.BASE_FILTERS=8", "DATASET.PATCH_SIZE=[64,64,64]", "TRAINING.ITER_MAX=3000",
        "TRAINING.LR_SCHEDULER.max_iter=3000", "TRAINING.TIME_SCHEDULE=true", "TRAINING.VAL_INTERVAL=100000",
        "TRAINING.VAL_OVERLAP=0", "TRAINING.CHANNELS_LAST=always", "TRAINING.WORKERS=0", "TRAINING.PRINT_INTERVAL=50"]
VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "sampling": ["DATASET.FG_SAMPLING=class", "DATASET.FG_OVERSAMPLE=0.67"],
    "loss": ["TRAINING.LOSS_FUNC.name=dice_ce_weighted", "TRAINING.LOSS_FUNC.prior_correction=false"],
    "patch": ["DATASET.PATCH_SIZE=[48,48,48]", "TRAINING.BATCH_SIZE=4"],
    "spacing": ["DATASET.SPACING=[5.0,5.0,3.0]"],
    "schedule": ["TRAINING.OPTIM.lr=0.005"],
    "deep_supervision": ["MODEL.DEEP_SUPERVISION=true"],
    "combined": ["DATASET.FG_SAMPLING=class", "DATASET.FG_OVERSAMPLE=0.67", "TRAINING.LOSS_FUNC.name=dice_ce_weighted",
                 "TRAINING.LOSS_FUNC.prior_correction=false", "DATASET.PATCH_SIZE=[48,48,48]", "TRAINING.BATCH_SIZE=4"],
}
#: variants also scored after each organ's largest connected component is kept (rtseg val --largest-component)
ALSO_LARGEST_COMPONENT = ("combined",)
DESCRIPTION = {
    "baseline": "8 filters, 64^3 patches x 2, FG_OVERSAMPLE 0.5 by case, Dice+CE, AdamW 2e-3, poly to the budget, NDHWC",
    "sampling": "organ drawn first, uniformly, then a case contouring it (FG_SAMPLING class), FG_OVERSAMPLE 0.67",
    "loss": "Dice + CE with inverse-sqrt class-frequency weights (dice_ce_weighted)",
    "patch": "48^3 patches x 4 (more, smaller patches per second)",
    "spacing": "plan spacing 5 x 5 x 3 mm instead of the median 3.9 x 3.9 x 2.5 mm",
    "schedule": "AdamW peak LR 5e-3 instead of 2e-3",
    "deep_supervision": "deep supervision on (losses at 1, 1/2, 1/4 with weights 4/7, 2/7, 1/7)",
    "combined": "sampling + loss + patch together",
}


def commands(name: str, minutes: float, out: Path) -> list[list[str]]:
    run = out / name
    sets = BASE + [f"TRAINING.MAX_MINUTES={minutes}"] + VARIANTS[name]
    train = [sys.executable, "-m", "rtseg", "train", "-c", str(CONFIG), "--run-dir", str(run)]
    for s in sets:
        train += ["--set", s]
    val = [sys.executable, "-m", "rtseg", "val", "-c", str(CONFIG), "--checkpoint", str(run / "checkpoints" / "best.pt"),
           "--set", "CUDA=false", "--overlap", "0.25", "--out", str(run)]
    cmds = [train, val]
    if name in ALSO_LARGEST_COMPONENT:
        cmds.append(val[:-1] + [str(run / "largest_component"), "--largest-component"])
    return cmds


def start(name: str, minutes: float, out: Path, threads: int) -> subprocess.Popen[bytes]:
    (out / name).mkdir(parents=True, exist_ok=True)
    script = " && ".join(" ".join(f"'{a}'" for a in cmd) for cmd in commands(name, minutes, out))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT / "src")}
    log = open(out / f"{name}.log", "wb")
    return subprocess.Popen(["bash", "-c", script], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def score(run: Path, scored: Path) -> dict[str, Any]:
    """Per organ: mean Dice and median HD95 over the cases contouring it (``scored``/val_per_case.csv)."""
    dice: dict[str, list[float]] = {}
    hd95: dict[str, list[float]] = {}
    with open(scored / "val_per_case.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            v = float(row["value"]) if row["value"] else math.nan
            if row["metric"] == "dice":
                dice.setdefault(row["organ"], []).append(v)
            elif row["metric"] == "hd95":
                hd95.setdefault(row["organ"], []).append(v)
    metrics = json.loads((run / "metrics.json").read_text())
    organs = {o: {"n": len(d), "dice": mean(d), "hd95_median": median(hd95.get(o, [math.inf]))} for o, d in dice.items()}
    return {"organs": organs, "mean_dice": mean(o["dice"] for o in organs.values()),
            "iterations": metrics["iterations"], "train_seconds": metrics["seconds"]}


def table(results: dict[str, dict[str, Any]]) -> str:
    organs = list(next(iter(results.values()))["organs"])
    head = "| variant | iterations | mean Dice | " + " | ".join(organs) + " |"
    lines = [head, "|" + "---|" * (3 + len(organs))]
    for name, r in results.items():
        cells = [f"{r['organs'][o]['dice']:.3f}" for o in organs]
        lines.append(f"| {name} | {r['iterations']} | {r['mean_dice']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=15.0, help="training budget of every variant")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time")
    ap.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run these variants only")
    ap.add_argument("--out", type=Path, required=True, help="work folder: one run dir and log per variant, ablation.json")
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"openkbp_ablation: {DATA} not found: this benchmark needs the shared OpenKBP data", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [v for v in VARIANTS if not args.only or v in args.only]
    running: dict[str, subprocess.Popen[bytes]] = {}
    t0 = time.monotonic()
    while todo or running:
        while todo and len(running) < args.parallel:
            name = todo.pop(0)
            running[name] = start(name, args.minutes, args.out, args.threads)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                print(f"{name}: exit {proc.returncode} after {(time.monotonic() - t0) / 60:.1f} min", flush=True)
                del running[name]
        time.sleep(5)
    results: dict[str, dict[str, Any]] = {}
    done = args.out / "ablation.json"
    previous = json.loads(done.read_text()) if done.exists() else {}
    for name in VARIANTS:
        run = args.out / name
        for label, scored in ((name, run), (f"{name} + largest component", run / "largest_component")):
            if (scored / "val_per_case.csv").exists():
                results[label] = {**score(run, scored), "change": DESCRIPTION[name]}
            elif label in previous:
                results[label] = previous[label]
    done.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
