"""``rtseg audit``: what physicians changed in the auto-contours (compare, report) and the approved cases as a dataset."""
from __future__ import annotations

import argparse
import sys

from rtseg.cli.common import add_command
from rtseg.cli.convert_archive import DEFAULT_ORGANS, aliases_from_options

NAME = "audit"
ALIAS_HELP = "extra ROI name for a class, repeatable: CLASS=NAME[,NAME...] (e.g. rectum=Rectum_old)"


def _pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--auto", required=True, metavar="DIR", help="folder of the automatic structure sets (any layout; "
                   "CT series here or in --approved)")
    p.add_argument("--approved", required=True, metavar="DIR", help="folder of the clinic's approved structure sets "
                   "(paired with --auto by the CT series they reference)")
    p.add_argument("--alias", action="append", metavar="CLASS=NAMES", help=ALIAS_HELP)


def _compare(args: argparse.Namespace) -> int:
    from rtseg.audit.compare import compare_folders

    res = compare_folders(args.auto, args.approved, args.out, aliases_from_options(args.alias), args.review_pages)
    n_cases = len(res.cases)
    print(f"{n_cases} case(s), {len(res.rows)} organ row(s): {res.outputs['edits_csv']}")
    for f, why in res.unmatched + res.failed:
        print(f"  not measured: {f}: {why}", file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from rtseg.audit.report import build_report, load_baseline

    baseline = load_baseline(args.baseline) if args.baseline else None
    rep = build_report(args.edits, args.out, window=args.window, margin=args.margin, baseline=baseline,
                       largest=args.largest)
    print(rep.table)
    for d in rep.drift:
        if d.alarm:
            print(f"DRIFT ALARM: {d.text(args.margin)}")
    print(f"dashboard: {rep.outputs['dashboard']}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from rtseg.audit.export import export_dataset
    from rtseg.cli.common import organ_class_names

    classes = organ_class_names(args.classes, "--classes") if args.classes else (
        None if args.init_model else organ_class_names(DEFAULT_ORGANS, "--classes"))
    report, left_out = export_dataset(args.auto, args.approved, args.out, classes, aliases_from_options(args.alias),
                                      args.include_unapproved, init_model=args.init_model, iterations=args.iterations)
    print(report.summary())
    if "finetune_config" in report.outputs:
        print(f"fine-tune with: rtseg train -c {report.outputs['finetune_config']}")
    for case, why in left_out:
        print(f"  left out: {case}: {why}", file=sys.stderr)
    return 0 if report.ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(NAME, help="measure the physicians' edits of the auto-contours; report, drift alarm, export",
                            description="Edit measures of auto-contours against the clinic's approved versions. "
                            "See docs/AUDIT.md.")
    acts = parser.add_subparsers(dest="action", metavar="ACTION")
    acts.required = True
    p = add_command(acts, "compare", _compare, "pair auto and approved structure sets and write edits.csv",
                    "Pair the structure sets of --auto and --approved by the CT series they reference, measure every "
                    "organ (Dice, surface Dice at 1/2/3 mm, added path length, HD95, volume ratio) on the CT grid and "
                    "write OUT/edits.csv, OUT/pairing.json and review pages of the most edited cases.")
    _pair_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--review-pages", type=int, default=5, metavar="N", help="review pages of the N most edited cases "
                   "(default 5; 0: none)")
    p = add_command(acts, "report", _report, "per-organ table, CSV, HTML dashboard and drift alarm from edits.csv files",
                    "Summarise one or more edits.csv files: per-organ table (printed and OUT/summary.csv), "
                    "OUT/drift.json and OUT/dashboard.html.")
    p.add_argument("--edits", nargs="+", required=True, metavar="CSV", help="edits.csv files, or folders holding one")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--window", type=int, default=10, metavar="N", help="cases in the rolling median (default 10)")
    p.add_argument("--margin", type=float, default=0.05, metavar="D", help="alarm when the rolling median surface Dice "
                   "(2 mm) is below the baseline minus D (default 0.05)")
    p.add_argument("--baseline", default=None, metavar="FILE", help="commissioning baseline: a study's edits.csv, or "
                   "JSON {organ: median surface Dice}; default: each organ's first N cases")
    p.add_argument("--largest", type=int, default=10, metavar="N", help="rows in the largest-edits table (default 10)")
    p = add_command(acts, "export-dataset", _export, "write the approved cases as an rtseg dataset (archive import)",
                    "Convert each paired CT and its APPROVED structure set into a NIfTI dataset with dataset.json "
                    "(per-case organ list) and rtseg_train.yml, through the archive import.")
    _pair_args(p)
    p.add_argument("--out", required=True, metavar="DIR", help="dataset folder")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME", help="organ names for labels 1, 2, ... "
                   f"(label 0 is background); default: the --init-model's classes, else {' '.join(DEFAULT_ORGANS)}")
    p.add_argument("--init-model", default=None, metavar="CKPT", help="the current model: also write "
                   "rtseg_finetune.yml, which fine-tunes it on these cases keeping its grid and normalization")
    p.add_argument("--iterations", type=int, default=2000, metavar="N", help="fine-tuning iterations in "
                   "rtseg_finetune.yml (default 2000)")
    p.add_argument("--include-unapproved", action="store_true", help="also export sets that are not APPROVED")
