"""``rtseg predict``: contour new CTs with a trained checkpoint."""
from __future__ import annotations

import argparse
import sys

from rtseg.cli.common import add_command
from rtseg.cli.dicom_options import add_roi_name_options

NAME = "predict"


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, run,
        help="contour CTs (NIfTI files or DICOM series) with a trained checkpoint",
        description="Predict organ labels for one CT or a batch. --input is a NIfTI file, a DICOM series folder, or a "
        "folder of NIfTI files and/or series sub-folders. Per case CASE (file name without _ct/_image/_0000 and "
        ".nii[.gz], or the series folder's name) writes CASE_pred.nii.gz on the input grid, CASE_rtstruct.dcm and "
        "CASE_seg.dcm (DICOM input only, referencing the input series) and CASE_overlay.png, as chosen with "
        "--format, plus summary.csv (case, status, seconds, error) for all cases. A failing case is reported and the others go on; the exit "
        "status is 1 if any case failed. See docs/PREDICT.md.",
    )
    p.add_argument("--checkpoint", required=True, nargs="+", metavar="CKPT",
                   help="checkpoint written by 'rtseg train' (.pt); several (an ensemble: their probabilities are "
                   "averaged), or an ensemble file / the folder 'rtseg cv' wrote (its per-organ post-processing applies)")
    p.add_argument("--input", required=True, metavar="PATH",
                   help="NIfTI file, DICOM series folder, or folder of NIfTI files / DICOM series folders")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--format", nargs="+", default=["nifti"], choices=("nifti", "rtstruct", "seg", "png"),
                   metavar="FMT", help="outputs: nifti (labels), rtstruct (DICOM RT Structure Set, DICOM input only), "
                   "seg (DICOM Segmentation for PACS viewers, DICOM input only), png (overlay montage); default nifti")
    add_roi_name_options(p)
    p.add_argument("--overlap", type=float, default=0.5, metavar="F",
                   help="sliding-window overlap fraction in [0, 1) (default 0.5)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over anterior-posterior/inferior-superior mirrors (4x slower)")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only the largest connected component of each organ")
    p.add_argument("--fill-holes", action="store_true", help="fill cavities enclosed by an organ")
    p.add_argument("--device", default="auto", metavar="DEV",
                   help="auto (GPU if available), cpu, or cuda[:N] (default auto)")
    p.add_argument("--batch-size", type=int, default=2, metavar="N",
                   help="sliding windows per network call (default 2)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (pays off on a GPU for many cases; slow first case)")


def run(args: argparse.Namespace) -> int:
    from rtseg.errors import ConfigError
    from rtseg.inference.pipeline import predict_path

    if not 0.0 <= args.overlap < 1.0:
        raise ConfigError(f"--overlap must be in [0, 1), got {args.overlap}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    report = predict_path(
        args.checkpoint,
        args.input,
        args.output,
        formats=args.format,
        device=args.device,
        overlap=args.overlap,
        tta=args.tta,
        largest_component=args.largest_component,
        fill_holes=args.fill_holes,
        compile=args.compile,
        batch_size=args.batch_size,
        holes=args.holes,
        roi_names=args.roi_names,
    )
    n_ok = len(report.results) - len(report.failed)
    print(f"{n_ok} of {len(report.results)} case(s) predicted; summary: {report.summary_csv}")
    for r in report.failed:
        print(f"rtseg predict: case {r.case} failed: {r.error}", file=sys.stderr)
    return 1 if report.failed else 0
