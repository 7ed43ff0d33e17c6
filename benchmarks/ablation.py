"""ARPM-net ablation: ResUnet_3D vs +MRF vs +ADV vs ARPM_net under the same wall-clock budget.

Phantoms (CPU):   python benchmarks/ablation.py --minutes 3
OpenKBP (GPU):    python benchmarks/ablation.py --data openkbp --minutes 3.5 --base-filters 16

Prints a Markdown table of per-organ Dice and HD95 on held-out cases (phantom test split, or the
OpenKBP validation split of configs/openkbp_splits.json) and writes it to --out as JSON.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtseg.config import load_config
from rtseg.apps.demo import DEMO_SHAPE, DEMO_SPACING, demo_config
from rtseg.evaluation.report import summarize
from rtseg.inference.evaluate_split import predict_and_score
from rtseg.inference.predictor import Predictor, load_model
from rtseg.device import select_device
from rtseg.training.trainer import fit

VARIANTS = {
    "ResUnet_3D": {},
    "ResUnet_3D+MRF": {"MRF": True},
    "ResUnet_3D+ADV": {"ADV": True},
    "ARPM_net (MRF+ADV)": {"NAME": "ARPM_net", "ADV": True},
}


def base_config(args: argparse.Namespace, work: Path) -> Any:
    if args.data == "phantoms":
        from rtseg.synthetic import write_phantom_dataset

        data = work / "data"
        if not (data / "test").is_dir():
            write_phantom_dataset(data, layout="nifti", seed=args.seed, splits={"train": 18, "val": 2, "test": 6},
                                  shape=DEMO_SHAPE, spacing=DEMO_SPACING, overwrite=True)
        cfg = demo_config(data, work / "runs", args.iterations, args.minutes, args.base_filters, cuda=True)
        return cfg, "test"
    cfg = load_config(args.config, [f"MODEL.BASE_FILTERS={args.base_filters}", f"TRAINING.ITER_MAX={args.iterations}",
                                     f"TRAINING.MAX_MINUTES={args.minutes}", f"TRAINING.LR_SCHEDULER.max_iter={args.iterations}",
                                     f"TRAINING.VAL_INTERVAL={max(1, args.iterations // 4)}"])
    return cfg, cfg.DATASET.VAL_SPLIT


def evaluate(ckpt: Path, cfg: Any, split: str) -> dict[str, dict[str, float]]:
    """Per organ: mean Dice and median HD95 (over finite values; inf when none is) on ``split``."""
    device = select_device(cfg.CUDA)
    predictor = Predictor(load_model(ckpt, device), device, overlap=0.25)
    scores = predict_and_score(predictor, cfg.DATASET, split)
    out = {}
    for organ, o in summarize(scores.rows, tolerance_mm=2.0)["organs"].items():
        dice, hd95 = o["metrics"]["dice"]["mean"], o["metrics"]["hd95"]["median"]
        out[organ] = {"dice": float("nan") if dice is None else dice, "hd95": float("inf") if hd95 is None else hd95,
                      "n": o["n_cases"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["phantoms", "openkbp"], default="phantoms")
    ap.add_argument("--config", default="configs/openkbp.yml", help="config for --data openkbp")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per variant")
    ap.add_argument("--iterations", type=int, default=400, help="ITER_MAX per variant (the budget usually stops first)")
    ap.add_argument("--base-filters", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="ablation_work")
    ap.add_argument("--out", default=None, help="write results JSON here")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = ap.parse_args()
    work = Path(args.work)
    cfg, split = base_config(args, work)
    results: dict[str, Any] = {}
    for name in args.variants:
        m = cfg.MODEL.model_copy(update=VARIANTS[name])
        vcfg = cfg.model_copy(update={"MODEL": m})
        t = time.monotonic()
        run = work / name.split(" ")[0].replace("+", "_")
        summary = fit(vcfg, "ablation", run_dir=run)
        organs = evaluate(run / "checkpoints" / "best.pt", vcfg, split)
        results[name] = {"iterations": summary["iterations"], "minutes": (time.monotonic() - t) / 60, "organs": organs,
                         "mean_dice": float(np.mean([o["dice"] for o in organs.values()]))}
        print(f"{name}: mean Dice {results[name]['mean_dice']:.3f} after {summary['iterations']} iterations", flush=True)
    organs = list(next(iter(results.values()))["organs"])
    print("\n| variant | iters | mean Dice | " + " | ".join(f"{o} Dice / HD95" for o in organs) + " |")
    print("|---" * (3 + len(organs)) + "|")
    for name, r in results.items():
        cells = [f"{r['organs'][o]['dice']:.3f} / {r['organs'][o]['hd95']:.1f}" for o in organs]
        print(f"| {name} | {r['iterations']} | {r['mean_dice']:.3f} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
