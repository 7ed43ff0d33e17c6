"""``rtseg train`` / ``val`` / ``test``: the original code base's modes."""
from __future__ import annotations

import argparse
from pathlib import Path

from rtseg.cli.common import add_config_args, add_precision_option, config_from_args, config_name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train per a YAML config (the original code base's format). Writes runs/<config-name>/<timestamp>/ with "
                       "checkpoints (best.pt by mean Dice, last.pt), train.log, config.yaml, TensorBoard scalars and metrics.json.")
    add_config_args(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from RUN_DIR/checkpoints/last.pt at its saved iteration")
    p.add_argument("--run-dir", metavar="DIR", help="write the run here instead of runs/<config-name>/<timestamp>")
    p.add_argument("--fold", type=int, metavar="K", help="cross-validation: train on the other folds of DATASET.TRAIN_SPLIT "
                   "and validate on fold K (0..N-1); the folds are deterministic and stratified on the contoured organs "
                   "(see rtseg cv)")
    p.add_argument("--folds", type=int, metavar="N", help="number of folds with --fold (default 5)")
    p.set_defaults(func=run_train)
    for mode, split_key in (("val", "VAL_SPLIT"), ("test", "TEST_SPLIT")):
        q = sub.add_parser(mode, help=f"evaluate a checkpoint on DATASET.{split_key}",
                           description=f"Predict every case of DATASET.{split_key} with a checkpoint (on the original grid) and "
                           "report the original code base's metrics (overall acc, mean acc, freq-weighted IoU, per-class and mean Dice) plus "
                           "distance metrics per case.")
        add_config_args(q)
        q.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint written by rtseg train (best.pt or last.pt)")
        q.add_argument("--out", metavar="DIR", help="where to write <split>_metrics.json (default: the checkpoint's run dir)")
        q.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1) (default 0.5)")
        q.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (anterior-posterior, inferior-superior)")
        add_precision_option(q)
        q.add_argument("--largest-component", action="store_true",
                       help="score each organ's largest connected component only (as rtseg predict --largest-component)")
        q.add_argument("--fill-holes", action="store_true",
                       help="score with enclosed holes filled (as rtseg predict --fill-holes)")
        q.set_defaults(func=run_eval, split_key=split_key)


def run_train(args: argparse.Namespace) -> int:
    from rtseg.training.trainer import fit

    from rtseg.config import load_config
    from rtseg.errors import ConfigError

    if args.folds is not None and args.fold is None:
        raise ConfigError("--folds N needs --fold K (the fold to train)")
    overrides = list(args.overrides)
    name = config_name(args.config)
    if args.fold is not None:
        overrides += [f"DATASET.FOLD={args.fold}", f"DATASET.FOLDS={args.folds if args.folds is not None else 5}"]
        name = f"{name}/fold_{args.fold}"
    cfg = load_config(args.config, overrides)
    summary = fit(cfg, name, resume=args.resume, run_dir=Path(args.run_dir) if args.run_dir else None)
    from rtseg.device import is_main_process

    if not is_main_process():
        return 0
    final = summary.get("final") or {}
    if final:
        from rtseg.inference.evaluate_split import format_metrics_table

        print(format_metrics_table(final))
    print(f"best mean Dice {summary['best_mean_dice']:.4f}; run directory: {summary['run_dir']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from rtseg.inference.evaluate_split import evaluate_split, format_metrics_table
    from rtseg.device import select_device

    cfg = config_from_args(args)
    split = getattr(cfg.DATASET, args.split_key)
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent)
    result = evaluate_split(cfg, ckpt, split, out, select_device(cfg.cuda_request), args.overlap, args.tta,
                            largest_component=args.largest_component, fill_holes=args.fill_holes,
                            precision=args.precision)
    print(format_metrics_table(result))
    print(f"metrics written to {out / (split + '_metrics.json')}")
    return 0
