"""``rtseg predict``: contour new CTs with a trained checkpoint."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from rtseg.inference.bundle import InferenceBundle
    from rtseg.review.batch import BatchReview
    from rtseg.review.gate import QaGate

from rtseg.cli.common import add_command
from rtseg.cli.dicom_options import add_roi_name_options
from rtseg.cli.common import add_precision_option
from rtseg.inference.outputs import output_help, output_names

NAME = "predict"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, run,
        help="contour CTs (NIfTI files or DICOM series) with a trained checkpoint",
        description="Predict organ labels for one CT or a batch. --input is a NIfTI file, a DICOM series folder, or a "
        "folder of NIfTI files and/or series sub-folders. Per case CASE (file name without _ct/_image/_0000 and "
        ".nii[.gz], or the series folder's name) writes one file per --format (below; DICOM outputs reference "
        "the input series); CASE_qa.json (contour QA: flags in words, against the "
        "checkpoint's training statistics) unless --no-qa; CASE_prob.nii.gz with --save-probabilities; and summary.csv "
        "(case, status, seconds, error, model, qa_gate, n_flags, flag_weight, flags), the cases to review first on top. "
        "Every output names the model (checkpoint file name and the first 12 hex digits of its SHA-256). The QA gate "
        "(--qa-policy) holds a case whose CT is unlike the training CTs: its RTSTRUCT/SEG go to OUTPUT/held/ (not where "
        "a planning system imports from) and summary.csv says 'held'. A failing case "
        "is reported and the others go on; the exit status is 1 if any case failed or was held, 2 if every case failed "
        "on bad input (then nothing is written), or if RTSTRUCT/SEG are asked of NIfTI input. Under `torchrun --nproc_per_node=N -m rtseg predict ...` the N processes share the "
        "cases (one GPU each, or the CPU) and rank 0 writes the one summary.csv. See docs/PREDICT.md.",
    )
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="CKPT",
                   help="checkpoint written by 'rtseg train' (.pt); several (an ensemble: their probabilities are "
                   "averaged), or an ensemble file / the folder 'rtseg cv' wrote (its per-organ post-processing applies)")
    p.add_argument("--input", required=True, metavar="PATH",
                   help="NIfTI file, DICOM series folder, or folder of NIfTI files / DICOM series folders")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--format", nargs="+", default=["nifti"], choices=output_names(), metavar="FMT",
                   help=f"outputs: {output_help()}; default nifti")
    add_roi_name_options(p)
    p.add_argument("--overlap", type=float, default=0.5, metavar="F",
                   help="sliding-window overlap fraction in [0, 1) (default 0.5)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over anterior-posterior/inferior-superior mirrors (4x slower)")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only the largest connected component of each organ")
    p.add_argument("--fill-holes", action="store_true", help="fill cavities enclosed by an organ")
    p.add_argument("--save-probabilities", nargs="?", const="uint8", choices=("uint8", "uint16"), metavar="TYPE",
                   help="write CASE_prob.nii.gz: per-class probabilities (4th axis in label order, background first) on "
                   "the input grid; uint8 (default, scl_slope 1/255, error <= 1/510) or uint16 (scl_slope 1/65535)")
    p.add_argument("--no-qa", action="store_true",
                   help="skip the contour QA (no CASE_qa.json, no probabilities needed: less memory); not with html")
    p.add_argument("--qa-policy", default="clinical", choices=("clinical", "research"),
                   help="QA gate: clinical (default) holds cases whose CT is unlike the training CTs (intensities, "
                   "spacing, field of view) and delivers organ-level flags attached; research delivers everything "
                   "with its flags (docs/REVIEW.md, 'QA gate')")
    p.add_argument("--nonfinite", default="error", metavar="error|VALUE",
                   help="NaN/inf voxels in a NIfTI CT: 'error' (default) fails that case; a number, e.g. -1024, "
                   "replaces them (with a warning)")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (GPU if available), cpu, or cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=int, default=2, metavar="N",
                   help="sliding windows per network call (default 2)")
    add_precision_option(p)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (pays off on a GPU for many cases; slow first case)")


def parse_nonfinite(text: str) -> "str | float":
    """``error`` or a finite number (the value NaN/inf voxels get)."""
    import math

    from rtseg.errors import ConfigError

    if text == "error":
        return text
    try:
        if math.isfinite(float(text)):
            return float(text)
    except ValueError:
        pass
    raise ConfigError(f"--nonfinite {text!r}: expected 'error' or a finite number such as -1024")


def run(args: argparse.Namespace) -> int:
    from rtseg.device import is_main_process
    from rtseg.errors import ConfigError
    from rtseg.inference.pipeline import PredictOptions, predict_path
    from rtseg.inference.predictor import NetworkOptions

    if not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    nonfinite = parse_nonfinite(args.nonfinite)
    review = None
    if args.no_qa:
        if "html" in args.format or args.save_probabilities:
            raise ConfigError("--no-qa: the review page (--format html) and --save-probabilities need the QA's network run")
    else:
        review = _review(args)
    options = PredictOptions(
        formats=tuple(args.format),
        device=args.device,
        network=NetworkOptions(overlap=args.overlap, tta=args.tta, batch_size=args.batch_size, compile=args.compile,
                               precision=args.precision),
        largest_component=args.largest_component,
        fill_holes=args.fill_holes,
        holes=args.holes,
        roi_names=args.roi_names,
        nonfinite=nonfinite,
    )
    report = predict_path(args.checkpoint, args.input, args.output, options, review=review, gate=_gate(args))
    if is_main_process():  # under torchrun every rank holds the whole batch's results: one prints
        n_ok = len(report.results) - len(report.failed) - len(report.held)
        held = f", {len(report.held)} held for review" if report.held else ""
        print(f"{n_ok} of {len(report.results)} case(s) predicted{held}; summary: {report.summary_csv}")
        for r in report.held:
            print(f"rtseg predict: case {r.case} {r.error}; its RTSTRUCT/SEG are in "
                  f"{report.summary_csv.parent / 'held'}", file=sys.stderr)
        for r in report.failed:
            print(f"rtseg predict: case {r.case} failed: {r.error}", file=sys.stderr)
    return 1 if report.failed or report.held else 0


def _gate(args: argparse.Namespace) -> "Callable[[InferenceBundle], QaGate]":
    """How the run's QA gate is built from the checkpoint's bundle (its training statistics)."""
    from functools import partial

    from rtseg.review.gate import QaGate

    return partial(QaGate, policy=args.qa_policy)


def _review(args: argparse.Namespace) -> "Callable[[InferenceBundle], BatchReview]":
    """How the run's review is built from the checkpoint's bundle (its statistics and temperature)."""
    from functools import partial

    from rtseg.review.batch import BatchReview

    return partial(BatchReview, html="html" in args.format, save_probabilities=args.save_probabilities)
