"""``rtseg convert nifti-to-nnunet`` / ``nnunet-to-nifti``: one dataset for both tools, round trips exact.

Files are copied byte for byte (they are NIfTI on both sides), only renamed: ``<id>_ct.nii.gz`` <->
``imagesTr/<id>_0000.nii.gz``, ``<id>_labels.nii.gz`` <-> ``labelsTr/<id>.nii.gz``; the test split goes
to ``imagesTs``/``labelsTs``. rtseg's dataset JSON (splits, contoured organs, exclusions) travels with
the data: written beside nnU-Net's ``dataset.json`` (nnU-Net ignores it) and back. It also keeps the
original ``dataset.json`` and whether a ``splits.json`` was there, so nnU-Net -> NIfTI -> nnU-Net gives
the same files, and NIfTI -> nnU-Net -> NIfTI the same pairs and dataset JSON.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.layouts.case_refs import SplitQuery
from rtseg.io.layouts.dataset_json import DATASET_JSON, FORMAT, VERSION, read_dataset_json
from rtseg.io.jsonfile import read_json, write_json
from rtseg.io.layouts.msd import SPLITS_FILE
from rtseg.io.layouts.nnunet import (CHANNEL, DATASET_JSON as NNUNET_JSON, IMAGES_TR, IMAGES_TS, LABELS_TR, LABELS_TS,
                                    class_names_of, list_nnunet_split, read_nnunet_json)
from rtseg.io.naming import CT_SUFFIX, cases_in, ct_file, labels_file

ENDING = ".nii.gz"
UNLABELLED = "unlabelled"


def copy_file(src: Path, dst: Path) -> None:
    """Byte-for-byte, atomic."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _nifti_dataset(src: Path, class_names: Sequence[str] | None) -> dict[str, Any]:
    """The rtseg dataset JSON of a NIfTI dataset: its own, or one built from split folders and ``class_names``."""
    if (src / DATASET_JSON).is_file():
        return read_dataset_json(src / DATASET_JSON)
    splits = {d.name: sorted(cases_in(d, CT_SUFFIX)) for d in sorted(src.iterdir()) if d.is_dir() and cases_in(d, CT_SUFFIX)}
    if not splits:
        raise DataError(f"{src}: neither {DATASET_JSON} nor split folders of <id>_ct.nii.gz files")
    if not class_names:
        raise DataError(f"{src}: no {DATASET_JSON} names the classes; give them with --classes")
    every = [c for ids in splits.values() for c in ids]
    return {"format": FORMAT, "version": VERSION, "class_names": list(class_names), "splits": splits,
            "cases": {c: list(class_names[1:]) for c in every}, "excluded": {}, "details": {}, "folders": True}


def nifti_to_nnunet(input_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                    class_names: Sequence[str] | None = None, test_split: str = "test") -> int:
    """NIfTI pairs (a flat folder with rtseg's dataset JSON, or split folders) -> an nnU-Net v2 raw dataset."""
    src, out = Path(input_dir), Path(out_dir)
    if not src.is_dir():
        raise DataError(f"{src}: input folder not found")
    table = _nifti_dataset(src, class_names)
    folders = table.pop("folders", False)
    n = 0
    for split, ids in table["splits"].items():
        d = src / split if folders else src
        test = split == test_split
        for cid in ids:
            copy_file(d / ct_file(cid), out / (IMAGES_TS if test else IMAGES_TR) / f"{cid}{CHANNEL}{ENDING}")
            copy_file(d / labels_file(cid), out / (LABELS_TS if test else LABELS_TR) / f"{cid}{ENDING}")
            n += 1
    nn = table.get("nnunet") or {}
    for cid in nn.get("unlabelled_test", []):
        copy_file(src / UNLABELLED / ct_file(cid), out / IMAGES_TS / f"{cid}{CHANNEL}{ENDING}")
    n_train = sum(len(ids) for s, ids in table["splits"].items() if s != test_split)
    meta = nn.get("dataset_json") or {"channel_names": {"0": "CT"}, "labels": {c: i for i, c in enumerate(table["class_names"])},
                                      "numTraining": n_train, "file_ending": ENDING}
    write_json(meta, out / NNUNET_JSON)
    if nn.get("splits_json", True):
        write_json(table["splits"], out / SPLITS_FILE)
    if nn.get("rtseg_json", True):
        write_json({k: v for k, v in table.items() if k != "nnunet"}, out / DATASET_JSON)
    return n


def nnunet_to_nifti(input_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> int:
    """An nnU-Net v2 raw dataset -> a flat folder of NIfTI pairs with rtseg's dataset JSON (splits kept)."""
    src, out = Path(input_dir), Path(out_dir)
    meta = read_nnunet_json(src)
    names = class_names_of(meta)
    had_splits = (src / SPLITS_FILE).is_file()
    names_of_splits = list(read_json(src / SPLITS_FILE, "splits file")) if had_splits else ["train", "val", "test"]
    splits = {s: list_nnunet_split(SplitQuery(src, s)) for s in names_of_splits}
    for refs in splits.values():
        for r in refs:
            copy_file(r.image, out / ct_file(r.case_id))
            assert r.label is not None
            copy_file(r.label, out / labels_file(r.case_id))
    labelled = {r.case_id for refs in splits.values() for r in refs}
    unlabelled = sorted(p.name[: -len(CHANNEL + meta["file_ending"])] for p in (src / IMAGES_TS).glob(f"*{CHANNEL}{meta['file_ending']}")
                        if p.name[: -len(CHANNEL + meta["file_ending"])] not in labelled) if (src / IMAGES_TS).is_dir() else []
    for cid in unlabelled:
        copy_file(src / IMAGES_TS / f"{cid}{CHANNEL}{meta['file_ending']}", out / UNLABELLED / ct_file(cid))
    had_table = (src / DATASET_JSON).is_file()
    if had_table:
        table = read_dataset_json(src / DATASET_JSON)
    else:
        table = {"format": FORMAT, "version": VERSION, "class_names": names,
                 "splits": {s: sorted(r.case_id for r in refs) for s, refs in splits.items()},
                 "cases": {c: names[1:] for c in sorted(labelled)}, "excluded": {}, "details": {}}
    table["nnunet"] = {"dataset_json": meta, "splits_json": had_splits, "rtseg_json": had_table,
                       "unlabelled_test": unlabelled}
    write_json(table, out / DATASET_JSON)
    return len(labelled)

