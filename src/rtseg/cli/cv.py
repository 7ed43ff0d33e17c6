"""``rtseg cv``: N-fold cross-validation of one config, then its out-of-fold metrics, post-processing and ensemble.

The folds are deterministic and stratified on the contoured organs (DATASET.PARTIAL_LABELS /
ABSENT_IS_UNKNOWN). --print lists the N training commands (one machine, torchrun, a SLURM array) and
exits; --run trains the folds one after another (a finished fold is kept) and then gathers; with neither,
it gathers folds trained elsewhere. Gathering predicts each fold's held-out cases with that fold's
best.pt, prints the CV table per organ and writes into the CV folder: cv_summary.json, cv_per_case.csv,
postprocessing.json (largest component / hole filling per organ, on only where it raised the CV Dice)
and ensemble.json, which rtseg predict --checkpoint CV_DIR and rtseg serve read.
"""
from __future__ import annotations

import argparse

from rtseg.cli.common import add_command, add_config_args, config_from_args, doc_body

NAME = "cv"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, run, help="cross-validate a config: train or print the folds, gather, choose "
                    "post-processing, write the ensemble", description=doc_body(__doc__))
    add_config_args(p)
    p.add_argument("--folds", type=int, default=5, metavar="N", help="number of folds (default 5)")
    p.add_argument("--out", metavar="DIR", help="CV folder (default TRAINING.RUNS_DIR/<config-name>/cv); fold K "
                   "trains in DIR/fold_K")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--run", action="store_true", help="train the folds here, one after another, then gather")
    mode.add_argument("--print", dest="print_only", action="store_true",
                      help="print the training commands (plain, torchrun, SLURM array) and the gather command; train nothing")
    p.add_argument("--overlap", type=float, default=0.5, metavar="F",
                   help="sliding-window overlap in [0, 1) for the out-of-fold predictions (default 0.5)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rtseg.errors import ConfigError
    from rtseg.training import cv

    if not 2 <= args.folds <= 100:
        raise ConfigError(f"--folds must be in 2..100, got {args.folds}")
    if not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap must be in [0, 1), got {args.overlap}")
    cfg = config_from_args(args)
    cv_dir = Path(args.out) if args.out else cv.default_cv_dir(cfg, args.config)
    if args.print_only:
        titles = {"plain": "one machine, one fold after another", "torchrun": "torchrun: NGPU processes per fold",
                  "slurm": "SLURM: one array task per fold", "gather": "then gather the folds"}
        for kind, lines in cv.fold_commands(args.config, args.overrides, args.folds, cv_dir).items():
            print(f"# {titles[kind]}")
            print("\n".join(lines))
        return 0
    if args.run:
        cv.run_folds(args.config, args.overrides, args.folds, cv_dir)
    from rtseg.device import select_device
    from rtseg.inference.cv_postprocess import format_choice_table

    result = cv.gather(args.config, args.overrides, args.folds, cv_dir, select_device(cfg.cuda_request), args.overlap)
    print(cv.format_cv_table(result))
    print()
    print(format_choice_table(result.postprocessing))
    print(f"CV folder: {cv_dir} (ensemble: {result.ensemble}; predict with: rtseg predict --checkpoint {cv_dir} ...)")
    return 0
