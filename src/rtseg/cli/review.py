"""``rtseg review``: one self-contained HTML page to review a case's contours in the browser."""
from __future__ import annotations

import argparse
from pathlib import Path

from rtseg.cli.common import add_command

NAME = "review"
HELP = "write a self-contained HTML review page of a CT and its contours (works offline)"
DESCRIPTION = (
    "Write one HTML file that opens from disk without network: axial, coronal and sagittal views with "
    "slice sliders, window presets (soft tissue, bone, lung), contours in the organ colours with per-organ toggles "
    "and opacity, the QA table with flagged organs first and, with --gt, prediction and ground truth side by side "
    "with Dice/HD95/ASSD. Without --qa the QA is computed here (with --stats: against the training statistics). "
    "See docs/REVIEW.md."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, run, HELP, DESCRIPTION)
    p.add_argument("--ct", required=True, metavar="CT", help="CT volume: NIfTI file or DICOM series folder (HU)")
    p.add_argument("--labels", required=True, metavar="PRED", help="predicted labels (NIfTI) on the CT grid")
    p.add_argument("--gt", metavar="GT", help="ground-truth labels (NIfTI) on the CT grid: adds a second row and metrics")
    p.add_argument("--qa", metavar="QA_JSON", help="qa.json written by 'rtseg predict' (its class names are used)")
    p.add_argument("--stats", metavar="JSON",
                   help="organ statistics (a plan.json with 'organ_stats', or the statistics alone) for QA without --qa")
    p.add_argument("--class-names", metavar="NAMES",
                   help="comma-separated names of labels 0..N-1, background first (default: from --qa or --stats, "
                   "else 'label 1', 'label 2', ...)")
    p.add_argument("--colors", metavar="JSON",
                   help="RGB per label 1..N-1 as a JSON list [[r,g,b],...] or a .json file (default: the original code base's COLOR_MAP)")
    p.add_argument("--title", metavar="TEXT", help="page title (default: the CT's file name)")
    p.add_argument("--ct-budget-mb", type=float, default=4.0, metavar="MB",
                   help="size budget of the embedded CT; beyond it the CT is shown at a coarser in-plane grid (default 4.0)")
    p.add_argument("--out", required=True, metavar="HTML", help="output .html file")


def _read_ct(path: str):  # noqa: ANN202 - returns rtseg.io.volume.Volume
    from rtseg.io.dicom.series import read_dicom_series
    from rtseg.io.nifti import read_nifti

    return read_dicom_series(path) if Path(path).is_dir() else read_nifti(path)


def _class_names(args: argparse.Namespace, qa: dict | None, stats: dict | None, n_labels: int) -> list[str]:
    from rtseg.errors import ConfigError

    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",")]
        if len(names) < 2 or any(not n for n in names):
            raise ConfigError(f"--class-names: expected comma-separated names, background first, got {args.class_names!r}")
        return names
    for source in (qa, stats):
        if source is not None:
            return list(source["class_names"])
    return ["background"] + [f"label {i}" for i in range(1, n_labels + 1)]


def _label_volume(path: str, ct, what: str):  # noqa: ANN001, ANN202
    from rtseg.errors import DataError
    from rtseg.io.nifti import read_nifti

    import numpy as np

    vol = read_nifti(path)
    if not vol.same_grid(ct):
        raise DataError(f"{path}: {what} grid (shape {vol.shape}) differs from the CT's (shape {ct.shape}); expected the CT grid")
    arr = vol.array
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)) or arr.min(initial=0) < 0 or arr.max(initial=0) > 255:
            raise DataError(f"{path}: {what} must hold whole labels 0..255, found {arr.dtype} values")
        arr = arr.astype(np.uint8)
    return arr


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from rtseg.errors import ConfigError
    from rtseg.config.colors import parse_colors
    from rtseg.labels import default_colors
    from rtseg.io.jsonfile import read_json
    from rtseg.review.organ_stats import check_stats
    from rtseg.review.page import review_page, write_page
    from rtseg.review.qa import case_qa

    if not args.out.lower().endswith((".html", ".htm")):
        raise ConfigError(f"--out must end in .html, got {args.out!r}")
    if not args.ct_budget_mb > 0:
        raise ConfigError(f"--ct-budget-mb must be > 0, got {args.ct_budget_mb}")
    ct = _read_ct(args.ct)
    labels = _label_volume(args.labels, ct, "labels")
    gt = None if args.gt is None else _label_volume(args.gt, ct, "ground truth")
    qa = None if args.qa is None else read_json(args.qa, "--qa")
    stats = None if args.stats is None else check_stats(read_json(args.stats, "--stats"), args.stats)
    n_labels = int(max(labels.max(initial=0), 0 if gt is None else gt.max(initial=0)))
    names = _class_names(args, qa, stats, n_labels)
    colors = parse_colors(args.colors) if args.colors else default_colors(len(names))
    title = args.title or Path(args.ct).name
    if qa is None:
        qa = case_qa(np.asarray(labels), ct.affine, names, ct=ct.array, stats=stats, case=title)
    page = review_page(ct.array, np.asarray(labels), ct.affine, names, colors, gt=gt, qa=qa, title=title,
                       ct_budget_bytes=int(args.ct_budget_mb * 1e6))
    out = write_page(page, args.out)
    print(f"review page: {out} ({out.stat().st_size / 1e6:.2f} MB, {qa['n_flags']} flag(s))")
    return 0
