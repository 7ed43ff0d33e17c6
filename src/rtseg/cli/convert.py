"""``rtseg convert``: DICOM CT / RTSTRUCT / PNG slices / seed .npy <-> NIfTI."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rtseg.config.schema import PELVIS_CLASS_NAMES, DatasetConfig
from rtseg.errors import ConfigError, RtsegError
from rtseg.cli.dicom_options import add_roi_name_options
from rtseg.io.dataset_convert import (
    ConversionReport,
    convert_dicom_dataset,
    convert_nifti_to_seed,
    convert_png_dataset,
    convert_seed_to_nifti,
    parse_color_map,
)
from rtseg.io.dicom_series import read_dicom_series
from rtseg.io.nifti import is_nifti, read_nifti, write_nifti
from rtseg.io.png_slices import DEFAULT_COLOR_TOLERANCE
from rtseg.io.roi_names import load_roi_name_map, roi_names_for
from rtseg.io.rtstruct import rtstruct_to_labels, write_rtstruct

NAME = "convert"
DEFAULT_ORGANS = list(PELVIS_CLASS_NAMES[1:])


def _class_names(organs: list[str]) -> list[str]:
    """Organ names for labels 1..N -> class names with background first (accepted if already given)."""
    names = organs[1:] if organs and organs[0].lower() == "background" else organs
    if not names:
        raise ConfigError("--classes: give at least one organ name")
    if len(set(names)) != len(names):
        raise ConfigError(f"--classes: names must be unique, got {names}")
    return ["background", *names]


def _aliases(items: list[str] | None) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items or []:
        cls, sep, names = item.partition("=")
        if not sep or not cls.strip() or not names.strip():
            raise ConfigError(f"--alias {item!r}: expected CLASS=ROI NAME[,ROI NAME...], e.g. bladder=Blase,UB")
        out.setdefault(cls.strip(), []).extend(n.strip() for n in names.split(",") if n.strip())
    return out


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


def _rtstruct_to_nifti(args: argparse.Namespace) -> int:
    out = _nifti_out(args.out)
    classes = _class_names(args.classes)
    ct = read_dicom_series(args.series, args.series_uid)
    labels, report = rtstruct_to_labels(args.rtstruct, ct, classes, _aliases(args.alias))
    write_nifti(labels, out, dtype="uint8")
    print(f"wrote {out}: {report.summary()}")
    return 0


def _nifti_to_rtstruct(args: argparse.Namespace) -> int:
    names = _class_names(args.names or DEFAULT_ORGANS)
    overrides = load_roi_name_map(args.roi_names) if args.roi_names else {}
    # names given on the command line are used as they are; the default classes get TG-263 names
    roi_names = roi_names_for(names[1:], overrides, tg263=not args.names)
    colors = parse_color_map(args.colors) if args.colors else DatasetConfig(PATH="", N_CLASSES=len(names)).colors()
    if len(colors) != len(names) - 1:
        raise ConfigError(f"--colors: {len(colors)} colours for {len(names) - 1} ROI names {names[1:]}")
    ct = read_dicom_series(args.series, args.series_uid)
    labels = read_nifti(args.labels)
    out = write_rtstruct(labels, ct, names, colors, args.out, roi_names, holes=args.holes)
    print(f"wrote {out}")
    return 0


def _nifti_to_seg(args: argparse.Namespace) -> int:
    from rtseg.io.seg import write_seg

    classes = _class_names(args.classes)
    names = roi_names_for(classes[1:], load_roi_name_map(args.roi_names) if args.roi_names else {})
    colors = parse_color_map(args.colors) if args.colors else DatasetConfig(PATH="", N_CLASSES=len(classes)).colors()
    ct = read_dicom_series(args.series, args.series_uid)
    out = write_seg(read_nifti(args.labels), ct, classes, colors, args.out, names)
    print(f"wrote {out}")
    return 0


def _seg_to_nifti(args: argparse.Namespace) -> int:
    from rtseg.io.seg import seg_to_labels

    out = _nifti_out(args.out)
    ct = read_dicom_series(args.series, args.series_uid)
    labels, report = seg_to_labels(args.seg, ct, _class_names(args.classes), _aliases(args.alias))
    write_nifti(labels, out, dtype="uint8")
    print(f"wrote {out}: {report.summary()}")
    return 0


def _dicom_dataset(args: argparse.Namespace) -> int:
    report = convert_dicom_dataset(args.input, args.out, _class_names(args.classes), _aliases(args.alias))
    return _finish(report, args.out)


def _png_dataset(args: argparse.Namespace) -> int:
    colors = parse_color_map(args.color_map) if args.color_map else DatasetConfig(PATH="", N_CLASSES=6).colors()
    size = None
    if args.size is not None:
        if len(args.size) not in (1, 2) or min(args.size) < 1:
            raise ConfigError(f"--size {args.size}: expected N (square) or NX NY, positive")
        size = (args.size[0], args.size[-1])
    if args.slices is not None and args.slices < 1:
        raise ConfigError(f"--slices {args.slices}: expected a positive number of slices")
    report = convert_png_dataset(args.input, args.out, colors, spacing=tuple(args.spacing), size=size,
                                 n_slices=args.slices, tolerance=args.tolerance)
    return _finish(report, args.out)


def _nifti_to_seed(args: argparse.Namespace) -> int:
    if args.n_classes is not None and args.n_classes < 2:
        raise ConfigError(f"--n-classes {args.n_classes}: expected at least 2 (background and one organ)")
    report = convert_nifti_to_seed(args.input, args.out, n_classes=args.n_classes, onehot=not args.no_onehot)
    return _finish(report, args.out)


def _seed_to_nifti(args: argparse.Namespace) -> int:
    if min(args.spacing) <= 0:
        raise ConfigError(f"--spacing {args.spacing}: expected positive sizes in mm")
    return _finish(convert_seed_to_nifti(args.input, args.out, spacing=tuple(args.spacing)), args.out)


def _spacing(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--spacing", nargs=3, type=float, default=[1.0, 1.0, 1.0], metavar=("X", "Y", "Z"), help=help_text)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        NAME,
        help="convert DICOM CT, RTSTRUCT, PNG slices and the seed's .npy layout to and from NIfTI",
        description="Convert clinical and legacy data to and from NIfTI. See docs/CLINICAL_IO.md.",
    )
    conv = parser.add_subparsers(dest="conversion", metavar="CONVERSION")
    conv.required = True

    p = conv.add_parser("dicom-to-nifti", help="a DICOM CT series -> one NIfTI (HU)",
                        description="Read a DICOM CT series (folder of slices) and write it as NIfTI in Hounsfield units.")
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the CT slices")
    p.add_argument("--out", required=True, metavar="CT.nii.gz", help="output NIfTI file")
    p.add_argument("--series-uid", metavar="UID", help="SeriesInstanceUID to read when the folder holds several series")
    p.set_defaults(func=_dicom_to_nifti)

    classes_help = "organ names for labels 1, 2, ... (label 0 is background); default: " + " ".join(DEFAULT_ORGANS)
    alias_help = ("extra ROI names for a class, e.g. --alias bladder=Blase,UB (repeatable); names are matched "
                  "ignoring case, spaces, '_' and '-', on top of built-in synonyms")

    p = conv.add_parser("rtstruct-to-nifti", help="an RTSTRUCT -> label NIfTI on its CT grid",
                        description="Rasterise the ROIs of an RTSTRUCT onto the CT series it was drawn on.")
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the CT slices the RTSTRUCT refers to")
    p.add_argument("--rtstruct", required=True, metavar="RS.dcm", help="the RT Structure Set file")
    p.add_argument("--out", required=True, metavar="LABELS.nii.gz", help="output label NIfTI (uint8)")
    p.add_argument("--classes", nargs="+", default=DEFAULT_ORGANS, metavar="NAME", help=classes_help)
    p.add_argument("--alias", action="append", metavar="CLASS=NAMES", help=alias_help)
    p.add_argument("--series-uid", metavar="UID", help="SeriesInstanceUID to read when the folder holds several series")
    p.set_defaults(func=_rtstruct_to_nifti)

    p = conv.add_parser("nifti-to-rtstruct", help="a label NIfTI -> RTSTRUCT against its DICOM CT series",
                        description="Write the labels (e.g. a prediction) as an RTSTRUCT referencing the CT series, "
                        "one ROI per non-empty label.")
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the CT slices the labels are on")
    p.add_argument("--labels", required=True, metavar="LABELS.nii.gz", help="label NIfTI on the CT grid")
    p.add_argument("--out", required=True, metavar="RS.dcm", help="output RTSTRUCT file")
    p.add_argument("--names", nargs="+", metavar="NAME",
                   help="ROI names for labels 1, 2, ..., used as given; default: the TG-263 names of "
                   + " ".join(DEFAULT_ORGANS))
    add_roi_name_options(p)
    p.add_argument("--colors", metavar="JSON|FILE", help="ROI colours: JSON [[r,g,b],...], a .json file or a config .yml "
                   "(DATASET.COLOR_MAP); default: the seed's colour map")
    p.add_argument("--series-uid", metavar="UID", help="SeriesInstanceUID to read when the folder holds several series")
    p.set_defaults(func=_nifti_to_rtstruct)

    _register_seg(conv, classes_help, alias_help)

    p = conv.add_parser("dicom-dataset", help="patient folders (CT series + RTSTRUCT) -> NIfTI pairs",
                        description="Convert INPUT/<case>/ (a CT series and its RTSTRUCT) to OUT/<case>_ct.nii.gz and "
                        "OUT/<case>_labels.nii.gz. Bad cases are reported and skipped; exit code 1 if any failed.")
    p.add_argument("--input", required=True, metavar="DIR", help="folder with one sub-folder per patient")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the NIfTI pairs")
    p.add_argument("--classes", nargs="+", default=DEFAULT_ORGANS, metavar="NAME", help=classes_help)
    p.add_argument("--alias", action="append", metavar="CLASS=NAMES", help=alias_help)
    p.set_defaults(func=_dicom_dataset)

    p = conv.add_parser("png-dataset", help="the seed's PNG slices + RGB masks -> NIfTI pairs",
                        description="Convert INPUT/<case>/CT/*.png and INPUT/<case>/MASK/*.png (paired by file name) to "
                        "NIfTI pairs, resampling image and labels identically.")
    p.add_argument("--input", required=True, metavar="DIR", help="folder with one sub-folder per patient")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the NIfTI pairs")
    p.add_argument("--color-map", metavar="JSON|FILE", help="organ colours in label order: JSON [[r,g,b],...], a .json "
                   "file or a config .yml (DATASET.COLOR_MAP); default: the seed's COLOR_MAP")
    p.add_argument("--tolerance", type=float, default=DEFAULT_COLOR_TOLERANCE,
                   help=f"largest RGB distance to a map colour still counted as it (default {DEFAULT_COLOR_TOLERANCE:g})")
    _spacing(p, "pixel width, pixel height and slice distance of the PNGs in mm (default 1 1 1)")
    p.add_argument("--size", nargs="+", type=int, metavar="N", help="resample in plane to N x N (or NX NY) voxels, "
                   "e.g. 64 as the seed did from 448")
    p.add_argument("--slices", type=int, metavar="N", help="centre-trim or zero-pad to N slices (the seed used 64)")
    p.set_defaults(func=_png_dataset)

    p = conv.add_parser("nifti-to-seed", help="NIfTI pairs -> the seed's CT/SEG/SEG_onehot .npy layout",
                        description="Convert <id>_ct.nii.gz + <id>_labels.nii.gz (in INPUT, or in INPUT/<split>/) to "
                        "OUT[/<split>]/CT/<id>.npy, SEG/<id>.npy and SEG_onehot/<id>.npy.")
    p.add_argument("--input", required=True, metavar="DIR", help="folder of NIfTI pairs, or of split folders holding them")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a split folder, or a folder of splits)")
    p.add_argument("--n-classes", type=int, metavar="N", help="number of classes for SEG_onehot (default: largest label + 1)")
    p.add_argument("--no-onehot", action="store_true", help="do not write SEG_onehot/")
    p.set_defaults(func=_nifti_to_seed)

    p = conv.add_parser("seed-to-nifti", help="the seed's CT/SEG .npy layout -> NIfTI pairs",
                        description="Convert INPUT[/<split>]/CT/<id>.npy + SEG/<id>.npy to OUT[/<split>]/<id>_ct.nii.gz "
                        "+ <id>_labels.nii.gz.")
    p.add_argument("--input", required=True, metavar="DIR", help="a seed split folder (with CT/ and SEG/), or a folder of splits")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for the NIfTI pairs")
    _spacing(p, "voxel size in mm along columns, rows and slices (the .npy files have none; default 1 1 1)")
    p.set_defaults(func=_seed_to_nifti)


def _register_seg(conv: argparse._SubParsersAction, classes_help: str, alias_help: str) -> None:
    """nifti-to-seg and seg-to-nifti: DICOM Segmentation out and in."""
    p = conv.add_parser("nifti-to-seg", help="a label NIfTI -> DICOM SEG against its DICOM CT series",
                        description="Write the labels as a DICOM Segmentation (one segment per class, coded anatomy, "
                        "frames referencing the CT slices), which PACS viewers display.")
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the CT slices the labels are on")
    p.add_argument("--labels", required=True, metavar="LABELS.nii.gz", help="label NIfTI on the CT grid")
    p.add_argument("--out", required=True, metavar="SEG.dcm", help="output SEG file")
    p.add_argument("--classes", nargs="+", default=DEFAULT_ORGANS, metavar="NAME", help=classes_help)
    p.add_argument("--roi-names", metavar="FILE", help="JSON or YAML mapping class -> segment label; classes not "
                   "listed get their AAPM TG-263 name")
    p.add_argument("--colors", metavar="JSON|FILE", help="segment colours, as for nifti-to-rtstruct")
    p.add_argument("--series-uid", metavar="UID", help="SeriesInstanceUID to read when the folder holds several series")
    p.set_defaults(func=_nifti_to_seg)

    p = conv.add_parser("seg-to-nifti", help="a DICOM SEG -> label NIfTI on its CT grid",
                        description="Read a DICOM Segmentation (rtseg's, TotalSegmentator's, MONAI Label's, ...) made on "
                        "the CT series; segments are mapped to classes by their labels like RTSTRUCT ROI names.")
    p.add_argument("--series", required=True, metavar="DIR", help="folder holding the CT slices the SEG refers to")
    p.add_argument("--seg", required=True, metavar="SEG.dcm", help="the DICOM Segmentation file")
    p.add_argument("--out", required=True, metavar="LABELS.nii.gz", help="output label NIfTI (uint8)")
    p.add_argument("--classes", nargs="+", default=DEFAULT_ORGANS, metavar="NAME", help=classes_help)
    p.add_argument("--alias", action="append", metavar="CLASS=NAMES", help=alias_help)
    p.add_argument("--series-uid", metavar="UID", help="SeriesInstanceUID to read when the folder holds several series")
    p.set_defaults(func=_seg_to_nifti)
