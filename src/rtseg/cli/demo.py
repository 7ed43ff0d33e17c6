"""``rtseg demo``: the whole job on built-in synthetic data."""
from __future__ import annotations

import argparse
from pathlib import Path

from rtseg.cli.common import add_command


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", run, help="generate synthetic pelvic CTs, train, evaluate and draw figures",
                    description="Generate synthetic pelvic CT patients (prostate, bladder, rectum, femoral heads), train "
                    "ResUnet_3D within a time budget, evaluate the test patients and write metrics.json, a per-organ "
                    "table, one GIF per test patient (CT | ground truth | prediction), PNG montages, training curves and a review page per "
                    "test patient (review/CASE_review.html with contour QA and ground truth, review/index.html).")
    p.add_argument("--out", default="demo_output", metavar="DIR", help="output folder (default demo_output)")
    p.add_argument("--cases", type=int, default=24, metavar="N", help="number of synthetic patients, >= 6 (default 24)")
    p.add_argument("--minutes", type=float, default=4.0, metavar="M", help="wall-clock budget for the whole demo (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the phantoms (default 0)")
    p.add_argument("--base-filters", type=int, default=8, metavar="F", help="ResUnet_3D width (default 8)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")


def run(args: argparse.Namespace) -> int:
    from rtseg.apps.demo import format_demo_table, run_demo

    result = run_demo(Path(args.out), args.cases, args.minutes, args.seed, args.base_filters, cuda=False if args.cpu else None)
    print(format_demo_table(result))
    print(f"figures in {Path(args.out) / 'figures'}; metrics in {Path(args.out) / 'metrics.json'}; "
          f"review pages: {result['review_index'] or Path(args.out) / 'review'}")
    return 0
