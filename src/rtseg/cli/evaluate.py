"""``rtseg evaluate``: compare predicted label files with ground-truth label files.

Pair NIfTI label files by case id (file name without .nii[.gz] and a trailing
_labels/_label/_pred/_seg/_gt/_mask; *_ct/_image/_img/_0000 files are ignored), compute Dice, IoU,
Hausdorff (max, 95th percentile), ASSD, average Hausdorff distance, surface Dice, relative volume
difference and volumes per organ, print a table and, with --out, write metrics.csv, summary.json,
report.md and one box plot per metric. Definitions: docs/METRICS.md.
"""
from __future__ import annotations

import argparse

from rtseg.cli.common import add_command, doc_body, organ_class_names

NAME = "evaluate"
HELP = "per-organ Dice, Hausdorff and surface metrics of predictions vs ground truth"


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(sub, NAME, run, HELP, doc_body(__doc__))
    parser.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted label files (NIfTI)")
    parser.add_argument("--gt", required=True, metavar="DIR", help="folder of ground-truth label files (NIfTI)")
    parser.add_argument(
        "--labels",
        nargs="+",
        metavar="NAME",
        help="organ names of labels 1, 2, ... in order (a leading 'background' is accepted and dropped); "
        "default: class_<i> for every label found",
    )
    parser.add_argument("--out", metavar="DIR", help="write the CSV, JSON summary, Markdown report and plots here")
    parser.add_argument(
        "--tolerance", type=float, default=2.0, metavar="MM", help="surface Dice tolerance in mm (default 2)"
    )
    parser.add_argument(
        "--skip-absent",
        action="store_true",
        help="treat organs missing from a ground-truth file as not contoured: no row instead of a miss "
        "(partially labelled data such as OpenKBP)",
    )
    parser.add_argument("--no-plots", action="store_true", help="do not draw the box plots")


def run(args: argparse.Namespace) -> int:
    from rtseg.evaluation.report import evaluate_folders, format_table

    names = organ_class_names(args.labels, "--labels") if args.labels else None
    summary = evaluate_folders(
        args.pred,
        args.gt,
        names,
        args.out,
        args.tolerance,
        skip_absent=args.skip_absent,
        plots=not args.no_plots,
    )
    print(format_table(summary))
    if args.out:
        print(f"wrote {args.out}")
    return 0
