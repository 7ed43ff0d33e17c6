"""``rtseg convert``: DICOM CT / RTSTRUCT / SEG / PNG slices / legacy_npy (the original code base's .npy layout) /
nnU-Net <-> NIfTI; whole DICOM exports and curation in ``rtseg.cli.convert_archive``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from rtseg.cli.common import add_command, add_dir_args, add_spacing_arg, organ_class_names
from rtseg.errors import ConfigError, RtsegError
from rtseg.cli.dicom_options import add_roi_name_options
from rtseg.cli.convert_archive import CLASSES_HELP, DEFAULT_ORGANS, add_roi_classes, aliases_from_options, register_archive
from rtseg.io.layouts.dataset_convert import (
    ConversionReport,
    convert_legacy_npy_to_nifti,
    convert_nifti_to_legacy_npy,
    convert_png_dataset,
)
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.nifti import is_nifti, read_nifti, write_nifti
from rtseg.io.png_slices import DEFAULT_COLOR_TOLERANCE, PngReading
from rtseg.io.rtstruct.roi_names import load_roi_name_map, roi_names_for
from rtseg.io.rtstruct import rtstruct_to_labels, write_rtstruct
from rtseg.io.volume import Volume
from rtseg.config.colors import parse_colors
from rtseg.labels import PELVIS_CLASS_NAMES, default_colors

NAME = "convert"
SERIES_UID_HELP = "SeriesInstanceUID to read when the folder holds several series"
PAIRS_OUT_HELP = "output folder for the NIfTI pairs"
PATIENTS_IN_HELP = "folder with one sub-folder per patient"


def _nifti_out(path: str) -> Path:
    if not is_nifti(path):
        raise RtsegError(f"--out {path}: expected a .nii.gz or .nii file name")
    return Path(path)


def _finish(report: ConversionReport, out: str) -> int:
    print(f"{report.summary()}; output in {out}")
    for case, reason in report.failed:
        print(f"  failed: {case}: {reason}", file=sys.stderr)
    return 0 if report.ok else 1


def _dicom_to_nifti(args: argparse.Namespace) -> int:
    out = _nifti_out(args.out)
    ct = read_dicom_series(args.series, args.series_uid)
    write_nifti(ct, out)
    print(f"wrote {out} ({'x'.join(map(str, ct.shape))} voxels, spacing {', '.join(f'{s:.3g}' for s in ct.spacing)} mm)")
    return 0


def _dicom_labels_to_nifti(args: argparse.Namespace, path: str, to_labels: Callable[..., tuple[Volume, Any]]) -> int:
    """An RTSTRUCT or SEG (``to_labels`` reads it onto the CT) -> a uint8 label NIfTI."""
    out = _nifti_out(args.out)
    classes = organ_class_names(args.classes, "--classes")
    ct = read_dicom_series(args.series, args.series_uid)
    labels, report = to_labels(path, ct, classes, aliases_from_options(args.alias))
    write_nifti(labels, out, dtype="uint8")
    print(f"wrote {out}: {report.summary()}")
    return 0


def _rtstruct_to_nifti(args: argparse.Namespace) -> int:
    return _dicom_labels_to_nifti(args, args.rtstruct, rtstruct_to_labels)


def _nifti_to_rtstruct(args: argparse.Namespace) -> int:
    names = organ_class_names(args.names or DEFAULT_ORGANS, "--names")
    overrides = load_roi_name_map(args.roi_names) if args.roi_names else {}
    # names given on the command line are used as they are; the default classes get TG-263 names
    roi_names = roi_names_for(names[1:], overrides, tg263=not args.names)
    colors = parse_colors(args.colors) if args.colors else default_colors(len(names))
    if len(colors) != len(names) - 1:
        raise ConfigError(f"--colors: {len(colors)} colours for {len(names) - 1} ROI names {names[1:]}")
    ct = read_dicom_series(args.series, args.series_uid)
    labels = read_nifti(args.labels)
    out = write_rtstruct(labels, ct, names, colors, args.out, roi_names, holes=args.holes)
    print(f"wrote {out}")
    return 0


def _nifti_to_seg(args: argparse.Namespace) -> int:
    from rtseg.io.dicom.seg import write_seg

    classes = organ_class_names(args.classes, "--classes")
    names = roi_names_for(classes[1:], load_roi_name_map(args.roi_names) if args.roi_names else {})
    colors = parse_colors(args.colors) if args.colors else default_colors(len(classes))
    ct = read_dicom_series(args.series, args.series_uid)
    out = write_seg(read_nifti(args.labels), ct, classes, colors, args.out, names)
    print(f"wrote {out}")
    return 0


def _seg_to_nifti(args: argparse.Namespace) -> int:
    from rtseg.io.dicom.seg import seg_to_labels

    return _dicom_labels_to_nifti(args, args.seg, seg_to_labels)


def _png_dataset(args: argparse.Namespace) -> int:
    colors = parse_colors(args.color_map, "--color-map") if args.color_map else default_colors(len(PELVIS_CLASS_NAMES))
    size = None
    if args.size is not None:
        if len(args.size) not in (1, 2) or min(args.size) < 1:
            raise ConfigError(f"--size {args.size}: expected N (square) or NX NY, positive")
        size = (args.size[0], args.size[-1])
    if args.slices is not None and args.slices < 1:
        raise ConfigError(f"--slices {args.slices}: expected a positive number of slices")
    reading = PngReading(colors, spacing=tuple(args.spacing), size=size, n_slices=args.slices, tolerance=args.tolerance)
    report = convert_png_dataset(args.input, args.out, reading)
    return _finish(report, args.out)


def _nifti_to_legacy_npy(args: argparse.Namespace) -> int:
    if args.n_classes is not None and args.n_classes < 2:
        raise ConfigError(f"--n-classes {args.n_classes}: expected at least 2 (background and one organ)")
    report = convert_nifti_to_legacy_npy(args.input, args.out, n_classes=args.n_classes, onehot=not args.no_onehot)
    return _finish(report, args.out)


def _legacy_npy_to_nifti(args: argparse.Namespace) -> int:
    if min(args.spacing) <= 0:
        raise ConfigError(f"--spacing {args.spacing}: expected positive sizes in mm")
    return _finish(convert_legacy_npy_to_nifti(args.input, args.out, spacing=tuple(args.spacing)), args.out)


def _series_uid(p: argparse.ArgumentParser) -> None:
    p.add_argument("--series-uid", metavar="UID", help=SERIES_UID_HELP)


def _labels_to_dicom_args(p: argparse.ArgumentParser, out_metavar: str, out_help: str) -> None:
    """--series, --labels, --out: labels on a CT grid, written as a DICOM object referencing that series."""
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the CT slices the labels are on")
    p.add_argument("--labels", required=True, metavar="LABELS.nii.gz", help="label NIfTI on the CT grid")
    p.add_argument("--out", required=True, metavar=out_metavar, help=out_help)


def _dicom_to_labels_args(p: argparse.ArgumentParser, option: str, metavar: str, what: str, file_help: str) -> None:
    """--series, the RTSTRUCT/SEG file, --out, --classes, --alias, --series-uid: a DICOM object -> label NIfTI."""
    p.add_argument("--series", required=True, metavar="DIR", help=f"folder holding the CT slices the {what} refers to")
    p.add_argument(option, required=True, metavar=metavar, help=file_help)
    p.add_argument("--out", required=True, metavar="LABELS.nii.gz", help="output label NIfTI (uint8)")
    add_roi_classes(p)
    _series_uid(p)


def _register_dicom(conv: argparse._SubParsersAction) -> None:
    p = add_command(conv, "dicom-to-nifti", _dicom_to_nifti, help="a DICOM CT series -> one NIfTI (HU)",
                    description="Read a DICOM CT series (folder of slices) and write it as NIfTI in Hounsfield units.")
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the CT slices")
    p.add_argument("--out", required=True, metavar="CT.nii.gz", help="output NIfTI file")
    _series_uid(p)

    p = add_command(conv, "rtstruct-to-nifti", _rtstruct_to_nifti, help="an RTSTRUCT -> label NIfTI on its CT grid",
                    description="Rasterise the ROIs of an RTSTRUCT onto the CT series it was drawn on.")
    _dicom_to_labels_args(p, "--rtstruct", "RS.dcm", "RTSTRUCT", "the RT Structure Set file")

    p = add_command(conv, "nifti-to-rtstruct", _nifti_to_rtstruct, help="a label NIfTI -> RTSTRUCT against its DICOM CT series",
                    description="Write the labels (e.g. a prediction) as an RTSTRUCT referencing the CT series, "
                    "one ROI per non-empty label.")
    _labels_to_dicom_args(p, "RS.dcm", "output RTSTRUCT file")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="ROI names for labels 1, 2, ..., used as given; default: the TG-263 names of "
                   + " ".join(DEFAULT_ORGANS))
    add_roi_name_options(p)
    p.add_argument("--colors", metavar="JSON|FILE", help="ROI colours: JSON [[r,g,b],...], a .json file or a config .yml "
                   "(DATASET.COLOR_MAP); default: the original code base's colour map")
    _series_uid(p)

    _register_seg(conv)


def _register_seg(conv: argparse._SubParsersAction) -> None:
    """nifti-to-seg and seg-to-nifti: DICOM Segmentation out and in."""
    p = add_command(conv, "nifti-to-seg", _nifti_to_seg, help="a label NIfTI -> DICOM SEG against its DICOM CT series",
                    description="Write the labels as a DICOM Segmentation (one segment per class, coded anatomy, "
                    "frames referencing the CT slices), which PACS viewers display.")
    _labels_to_dicom_args(p, "SEG.dcm", "output SEG file")
    p.add_argument("--classes", nargs="+", default=DEFAULT_ORGANS, metavar="NAME", help=CLASSES_HELP)
    p.add_argument("--roi-names", metavar="FILE", help="JSON or YAML mapping class -> segment label; classes not "
                   "listed get their AAPM TG-263 name")
    p.add_argument("--colors", metavar="JSON|FILE", help="segment colours, as for nifti-to-rtstruct")
    _series_uid(p)

    p = add_command(conv, "seg-to-nifti", _seg_to_nifti, help="a DICOM SEG -> label NIfTI on its CT grid",
                    description="Read a DICOM Segmentation (rtseg's, TotalSegmentator's, MONAI Label's, ...) made on "
                    "the CT series; segments are mapped to classes by their labels like RTSTRUCT ROI names.")
    _dicom_to_labels_args(p, "--seg", "SEG.dcm", "SEG", "the DICOM Segmentation file")


def _register_datasets(conv: argparse._SubParsersAction) -> None:
    register_archive(conv)
    p = add_command(conv, "png-dataset", _png_dataset, help="the original code base's PNG slices + RGB masks -> NIfTI pairs",
                    description="Convert INPUT/<case>/CT/*.png and INPUT/<case>/MASK/*.png (paired by file name) to "
                    "NIfTI pairs, resampling image and labels identically.")
    add_dir_args(p, PATIENTS_IN_HELP, PAIRS_OUT_HELP)
    p.add_argument("--color-map", metavar="JSON|FILE", help="organ colours in label order: JSON [[r,g,b],...], a .json "
                   "file or a config .yml (DATASET.COLOR_MAP); default: the original code base's COLOR_MAP")
    p.add_argument("--tolerance", type=float, default=DEFAULT_COLOR_TOLERANCE,
                   help=f"largest RGB distance to a map colour still counted as it (default {DEFAULT_COLOR_TOLERANCE:g})")
    add_spacing_arg(p, "pixel width, pixel height and slice distance of the PNGs in mm (default 1 1 1)")
    p.add_argument("--size", nargs="+", type=int, metavar="N", help="resample in plane to N x N (or NX NY) voxels, "
                   "e.g. 64 as the original code base did from 448")
    p.add_argument("--slices", type=int, metavar="N", help="centre-trim or zero-pad to N slices (the original code base used 64)")

    p = add_command(conv, "nifti-to-legacy-npy", _nifti_to_legacy_npy, aliases=["nifti-to-seed"],
                    help="NIfTI pairs -> legacy_npy, the original code base's CT/SEG/SEG_onehot .npy layout",
                    description="Convert <id>_ct.nii.gz + <id>_labels.nii.gz (in INPUT, or in INPUT/<split>/) to "
                    "OUT[/<split>]/CT/<id>.npy, SEG/<id>.npy and SEG_onehot/<id>.npy.")
    add_dir_args(p, "folder of NIfTI pairs, or of split folders holding them",
                 "output folder (a split folder, or a folder of splits)")
    p.add_argument("--n-classes", type=int, metavar="N", help="number of classes for SEG_onehot (default: largest label + 1)")
    p.add_argument("--no-onehot", action="store_true", help="do not write SEG_onehot/")

    p = add_command(conv, "legacy-npy-to-nifti", _legacy_npy_to_nifti, aliases=["seed-to-nifti"],
                    help="legacy_npy, the original code base's CT/SEG .npy layout -> NIfTI pairs",
                    description="Convert INPUT[/<split>]/CT/<id>.npy + SEG/<id>.npy to OUT[/<split>]/<id>_ct.nii.gz "
                    "+ <id>_labels.nii.gz.")
    add_dir_args(p, "a legacy_npy split folder (with CT/ and SEG/), or a folder of splits", PAIRS_OUT_HELP)
    add_spacing_arg(p, "voxel size in mm along columns, rows and slices (the .npy files have none; default 1 1 1)")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME,
        help="convert DICOM CT, RTSTRUCT, PNG slices and the legacy_npy layout to and from NIfTI",
        description="Convert clinical and legacy data to and from NIfTI. See docs/CLINICAL_IO.md.",
    )
    conv = parser.add_subparsers(dest="conversion", metavar="CONVERSION")
    conv.required = True
    _register_dicom(conv)
    _register_datasets(conv)
