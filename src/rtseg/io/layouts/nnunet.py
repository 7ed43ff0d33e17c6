"""The ``nnunet`` dataset layout: an nnU-Net v2 raw dataset (``DatasetXXX_Name/``).

``imagesTr/<case>_0000<file_ending>`` + ``labelsTr/<case><file_ending>``, ``imagesTs/`` (+ ``labelsTs/``
where the test cases have labels) and ``dataset.json`` with ``channel_names``, ``labels``
(name -> integer value, background 0) and ``file_ending``. rtseg reads one channel (CT) and NIfTI
files (``.nii.gz`` / ``.nii``); region-based labels (lists) and an ``ignore`` label are refused.
Splits: ``splits.json`` ({split: [ids]}) beside ``dataset.json`` (``rtseg convert nifti-to-nnunet``
writes it); else nnU-Net's ``splits_final.json`` fold 0 if copied there; else a fixed 80/20
train/val split of ``imagesTr`` and ``imagesTs`` as the test split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rtseg.errors import DataError
from rtseg.io.layouts.case_refs import CaseRef, Layout, SplitQuery
from rtseg.io.jsonfile import read_json
from rtseg.io.layouts.msd import SPLITS_FILE, holdout_split_ids
from rtseg.io.nifti import NIFTI_SUFFIXES

NAME = "nnunet"
DATASET_JSON = "dataset.json"
CHANNEL = "_0000"
IMAGES_TR, LABELS_TR, IMAGES_TS, LABELS_TS = "imagesTr", "labelsTr", "imagesTs", "labelsTs"
NNUNET_SPLITS = "splits_final.json"


def read_nnunet_json(root: Path) -> dict[str, Any]:
    """``dataset.json`` checked for what rtseg can train on: one channel, integer labels, NIfTI files."""
    dj = root / DATASET_JSON
    if not dj.is_file():
        raise DataError(f"{root}: {DATASET_JSON} not found (nnU-Net v2 raw layout is imagesTr/, labelsTr/, dataset.json)")
    meta = read_json(dj, "nnU-Net dataset.json")
    missing = [k for k in ("channel_names", "labels", "file_ending") if k not in meta]
    if missing:
        raise DataError(f"{dj}: missing {', '.join(missing)} (nnU-Net v2 dataset.json; a Decathlon one is DATASET.NAME msd)")
    if len(meta["channel_names"]) != 1:
        raise DataError(f"{dj}: {len(meta['channel_names'])} channels {dict(meta['channel_names'])}; rtseg trains on one (CT)")
    if meta["file_ending"] not in NIFTI_SUFFIXES:
        raise DataError(f"{dj}: file_ending {meta['file_ending']!r}; rtseg reads {' or '.join(NIFTI_SUFFIXES)}")
    labels = meta["labels"]
    if "ignore" in labels:
        raise DataError(f"{dj}: an 'ignore' label; rtseg reads fully labelled nnU-Net datasets (use DATASET.PARTIAL_LABELS)")
    bad = {k: v for k, v in labels.items() if not isinstance(v, int) or isinstance(v, bool)}
    if bad:
        raise DataError(f"{dj}: labels {bad} are not single integers (region-based training is not supported)")
    if sorted(labels.values()) != list(range(len(labels))) or labels.get("background", 0) != 0:
        raise DataError(f"{dj}: label values {sorted(labels.values())}; expected 0 (background), 1, 2, ... without gaps")
    return meta


def class_names_of(meta: dict[str, Any]) -> list[str]:
    return [name for name, _ in sorted(meta["labels"].items(), key=lambda kv: kv[1])]


def _cases(root: Path, images: str, labels: str, ending: str, need_labels: bool) -> dict[str, CaseRef]:
    d = root / images
    if not d.is_dir():
        return {}
    tail = CHANNEL + ending
    out = {}
    for img in sorted(d.glob(f"*{tail}")):
        cid = img.name[: -len(tail)]
        lab = root / labels / f"{cid}{ending}"
        if not lab.is_file():
            if need_labels:
                raise DataError(f"{img}: no label file {labels}/{lab.name}")
            lab = None
        out[cid] = CaseRef(cid, img, lab, NAME)
    extra = [p.name for p in d.iterdir() if p.name.endswith(ending) and not p.name.endswith(tail)]
    if extra:
        raise DataError(f"{d}: {', '.join(sorted(extra)[:3])}: channel files other than {CHANNEL}; rtseg trains on one channel")
    return out


def _split_ids(q: SplitQuery, train: dict[str, CaseRef], test: dict[str, CaseRef]) -> list[str]:
    if (q.root / SPLITS_FILE).exists():
        return holdout_split_ids(list(train), q, "nnU-Net")  # reads splits.json
    if q.split == q.test_split:
        return sorted(test)
    if not (q.root / NNUNET_SPLITS).exists():
        return holdout_split_ids(list(train), q, "nnU-Net")
    folds = read_json(q.root / NNUNET_SPLITS, "nnU-Net splits_final.json")
    if not isinstance(folds, list) or not folds or not isinstance(folds[0], dict) or not {"train", "val"} <= set(folds[0]):
        raise DataError(f"{q.root / NNUNET_SPLITS}: expected nnU-Net's list of {{'train': [...], 'val': [...]}} per fold")
    if q.split not in (q.train_split, q.val_split):
        raise DataError(f"{q.root}: nnU-Net layout has splits {q.train_split!r}, {q.val_split!r} and {q.test_split!r}")
    return sorted(folds[0]["train" if q.split == q.train_split else "val"])


def list_nnunet_split(q: SplitQuery) -> list[CaseRef]:
    meta = read_nnunet_json(q.root)
    if q.n_classes is not None and q.n_classes != len(meta["labels"]):
        raise DataError(f"{q.root / DATASET_JSON}: {len(meta['labels'])} labels {class_names_of(meta)}, "
                        f"but DATASET.N_CLASSES is {q.n_classes}")
    ending = meta["file_ending"]
    train = _cases(q.root, IMAGES_TR, LABELS_TR, ending, need_labels=True)
    if not train:
        raise DataError(f"{q.root / IMAGES_TR}: no *{CHANNEL}{ending} images")
    test = {c: r for c, r in _cases(q.root, IMAGES_TS, LABELS_TS, ending, need_labels=False).items() if r.label is not None}
    every = {**test, **train}
    ids = _split_ids(q, train, test)
    missing = [c for c in ids if c not in every]
    if missing:
        raise DataError(f"{q.root}: split {q.split!r} lists cases without image and label files: {', '.join(missing[:5])}")
    return [every[c] for c in ids]


LAYOUT = Layout(NAME, list_nnunet_split, "nnU-Net v2 raw: imagesTr/<id>_0000.nii.gz, labelsTr/, dataset.json")
