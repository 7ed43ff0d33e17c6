"""``rtseg plan``: derive spacing, patch size, normalization and class weights from the training set."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rtseg.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="plan preprocessing and patch size from the training data",
                       description="Read the training split and write a plan (JSON): target spacing (median), patch size "
                       "fitting TRAINING.MEMORY_BUDGET_GIB, CT normalization from foreground percentiles, class frequencies. "
                       "Use it with DATASET.PLAN: <file> (or DATASET.PLAN: auto to plan when training starts). "
                       "Explicit DATASET.SPACING / PATCH_SIZE / NORMALIZE / HU_WINDOW in the config override the plan.")
    add_config_args(p)
    p.add_argument("--out", default="plan.json", metavar="FILE", help="where to write the plan (default plan.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rtseg.data.plan import save_plan
    from rtseg.models.spec import build_model, model_spec, model_stride
    from rtseg.training.data_setup import plan_for

    cfg = config_from_args(args)
    m = cfg.MODEL
    try:
        stride = model_stride(build_model(model_spec(m.NAME, m.CHANNEL_IN, cfg.DATASET.N_CLASSES, 1, 0.0)))
    except ValueError as exc:
        from rtseg.errors import ConfigError

        raise ConfigError(f"MODEL.NAME: {exc}") from None
    plan = plan_for(cfg, stride)
    save_plan(plan, Path(args.out))
    saved = plan.to_dict()
    print(json.dumps({k: saved[k] for k in ("n_cases", "target_spacing", "median_shape", "patch_size", "estimated_memory_gib", "normalization")}, indent=2))
    print(f"plan written to {args.out}")
    return 0
