"""``rtseg convert`` conversions of whole datasets for training: a clinic's DICOM export, curation and
exclusions, and nnU-Net v2 raw datasets (registered by ``rtseg.cli.convert``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

from rtseg.cli.common import add_command, add_dir_args, organ_class_names
from rtseg.errors import ConfigError
from rtseg.io.archive.convert import DEFAULT_WORKERS, ArchiveReport, convert_dicom_archive
from rtseg.io.layouts.dataset_json import DATASET_JSON
from rtseg.io.layouts.dataset_json import set_exclusion
from rtseg.io.layouts.nnunet_convert import nifti_to_nnunet, nnunet_to_nifti
from rtseg.io.rtstruct.roi_names import load_roi_aliases
from rtseg.review.curation import curate_dataset
from rtseg.labels import PELVIS_CLASS_NAMES
from rtseg.review.curation_pages import write_curation

DEFAULT_ORGANS = list(PELVIS_CLASS_NAMES[1:])
CLASSES_HELP = "organ names for labels 1, 2, ... (label 0 is background); default: " + " ".join(DEFAULT_ORGANS)
ALIAS_HELP = ("extra ROI names for a class, e.g. --alias bladder=Blase,UB (repeatable); names are matched "
              "ignoring case, spaces, '_' and '-', on top of built-in synonyms")
ALIASES_HELP = ("JSON/YAML file {class: [ROI names]} of extra names per class (the name report's "
                "suggested_aliases, checked by you); added to --alias")


def _report(report: ArchiveReport, out: str) -> None:
    print(f"{report.summary()} ({report.n_files} DICOM files, {report.n_patients} patients); output in {out}")
    if report.ignored:
        print("  ignored: " + ", ".join(f"{n} {m}" for m, n in report.ignored.items()) + " files (not CT or RTSTRUCT)")
    if report.dicomdir:
        print("  DICOMDIR found: the folder tree was scanned directly")
    for path, reason in report.refused_structure_sets:
        print(f"  refused: {path}: {reason}", file=sys.stderr)
    for path, reason in report.unreadable:
        print(f"  unreadable: {path}: {reason}", file=sys.stderr)
    for case, reason in report.failed:
        print(f"  failed: {case}: {reason}", file=sys.stderr)
    for key in ("name_report", "dataset_json", "config"):
        if key in report.outputs:
            print(f"  {key.replace('_', ' ')}: {report.outputs[key]}")


def _curate(dataset_json: Path) -> None:
    result = curate_dataset(dataset_json)
    paths = write_curation(result, dataset_json)
    flagged = {c: q for c, q in result["cases"].items() if q["flags"]}
    print(f"curation: {sum(q['n_flags'] for q in flagged.values())} flag(s) in {len(flagged)} of {len(result['cases'])} "
          f"case(s); review pages: {paths['index']}")
    for case, q in sorted(flagged.items(), key=lambda kv: -kv[1]["flag_weight"]):
        for f in q["flags"]:
            print(f"  {case}: {f['text']}")


def aliases_from_options(items: Sequence[str] | None) -> dict[str, list[str]]:
    """``--alias CLASS=NAME,NAME`` options -> {class: [names]}."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        cls, sep, names = item.partition("=")
        if not sep or not cls.strip() or not names.strip():
            raise ConfigError(f"--alias {item!r}: expected CLASS=ROI NAME[,ROI NAME...], e.g. bladder=Blase,UB")
        out.setdefault(cls.strip(), []).extend(n.strip() for n in names.split(",") if n.strip())
    return out


def add_roi_classes(p: argparse.ArgumentParser) -> None:
    """``--classes`` and ``--alias``: which ROI of an RTSTRUCT becomes which label."""
    p.add_argument("--classes", nargs="+", default=DEFAULT_ORGANS, metavar="NAME", help=CLASSES_HELP)
    p.add_argument("--alias", action="append", metavar="CLASS=NAMES", help=ALIAS_HELP)


def merged_aliases(items: Sequence[str] | None, path: str | None) -> Mapping[str, list[str]]:
    out = aliases_from_options(items)
    for cls, names in (load_roi_aliases(path) if path else {}).items():
        out.setdefault(cls, []).extend(names)
    return out


def _dicom_dataset(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected at least 1")
    classes = organ_class_names(args.classes, "--classes")
    report = convert_dicom_archive(args.input, args.out, classes, merged_aliases(args.alias, args.aliases), workers=args.workers)
    _report(report, args.out)
    if report.usable and not args.no_curation:
        _curate(Path(args.out) / DATASET_JSON)
    return 0 if report.ok else 1


def _curate_cmd(args: argparse.Namespace) -> int:
    _curate(Path(args.dataset))
    return 0


def _exclude(args: argparse.Namespace) -> int:
    table = set_exclusion(args.dataset, args.case, args.organ, args.reason or "", undo=args.undo)
    entry = table["excluded"].get(args.case)
    state = "no longer excluded" if entry is None else f"excluded: {entry['organs']}"
    print(f"{args.case}: {state} ({args.dataset}); training reads it through DATASET.SPLITS / PARTIAL_LABELS")
    return 0


def _to_nnunet(args: argparse.Namespace) -> int:
    classes = organ_class_names(args.classes, "--classes") if args.classes else None
    n = nifti_to_nnunet(args.input, args.out, classes)
    print(f"wrote an nnU-Net v2 raw dataset of {n} cases to {args.out} (DATASET.NAME nnunet reads it)")
    return 0


def _from_nnunet(args: argparse.Namespace) -> int:
    n = nnunet_to_nifti(args.input, args.out)
    print(f"wrote {n} NIfTI pairs and {DATASET_JSON} to {args.out} (DATASET.NAME nifti, SPLITS {DATASET_JSON})")
    return 0


def register_archive(conv: argparse._SubParsersAction) -> None:
    p = add_command(conv, "dicom-dataset", _dicom_dataset, help="a DICOM export (CT + RTSTRUCTs) -> a training-ready NIfTI dataset",
                    description="Convert a clinic's DICOM export as it comes (any folder layout, files with or without "
                    "extension, several series and structure sets per patient) to OUT/<case>_ct.nii.gz + <case>_labels.nii.gz, "
                    "rtseg_dataset.json (splits, contoured organs per case, provenance), rtseg_train.yml (rtseg train -c), "
                    "the ROI name report and curation pages. Unchanged cases are skipped on a re-run. Exit code 1 if any "
                    "case failed. See docs/CLINICAL_IO.md.")
    add_dir_args(p, "the export: a folder (any layout) or its DICOMDIR", "output folder")
    add_roi_classes(p)
    p.add_argument("--aliases", metavar="FILE", help=ALIASES_HELP)
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help=f"processes (default {DEFAULT_WORKERS})")
    p.add_argument("--no-curation", action="store_true", help="do not check the contours after converting")

    p = add_command(conv, "curate", _curate_cmd, help="flag training contours that look wrong (review pages)",
                    description="Compare every case of a converted dataset with the others (volume, position, "
                    "left/right, slices, gaps, pieces) and write curation/index.html and a page per flagged case.")
    p.add_argument("--dataset", required=True, metavar="JSON", help=f"the {DATASET_JSON} of the dataset")

    p = add_command(conv, "exclude", _exclude, help="exclude a case or an organ of a case from training",
                    description="Record in the dataset JSON that a case (or, with --organ, some of its organs) must "
                    "not be trained on; an excluded organ counts as not contoured in that case.")
    p.add_argument("--dataset", required=True, metavar="JSON", help=f"the {DATASET_JSON} of the dataset")
    p.add_argument("--case", required=True, help="case id")
    p.add_argument("--organ", action="append", metavar="NAME", help="exclude only this organ (repeatable)")
    p.add_argument("--reason", help="why, kept in the dataset JSON")
    p.add_argument("--undo", action="store_true", help="lift the exclusion")

    p = add_command(conv, "nifti-to-nnunet", _to_nnunet, help="NIfTI pairs -> an nnU-Net v2 raw dataset",
                    description="Copy NIfTI pairs (a folder with rtseg_dataset.json, or split folders) into "
                    "imagesTr/<id>_0000.nii.gz, labelsTr/, imagesTs/, labelsTs/ with dataset.json and splits.json.")
    add_dir_args(p, "folder of NIfTI pairs", "the nnU-Net dataset folder (e.g. Dataset001_Pelvis)")
    p.add_argument("--classes", nargs="+", metavar="NAME", help="organ names for labels 1, 2, ... (when no rtseg_dataset.json names them)")

    p = add_command(conv, "nnunet-to-nifti", _from_nnunet, help="an nnU-Net v2 raw dataset -> NIfTI pairs",
                    description="Copy an nnU-Net v2 raw dataset into a flat folder of <id>_ct.nii.gz + <id>_labels.nii.gz "
                    "with rtseg_dataset.json (its splits and classes); nifti-to-nnunet gives back the same files.")
    add_dir_args(p, "the nnU-Net dataset folder", "output folder")
