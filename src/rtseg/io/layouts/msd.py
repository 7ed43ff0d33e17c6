"""The ``msd`` dataset layout (Medical Segmentation Decathlon): ``PATH/imagesTr``, ``PATH/labelsTr`` and a
``dataset.json`` whose ``training`` list names the pairs.

MSD has no validation split: ``PATH/splits.json`` ({split: [ids]}) if present, else a fixed 80/20 split
of the training cases (:func:`holdout_split_ids`, shared with the nnU-Net layout).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rtseg.errors import DataError
from rtseg.io.layouts.case_refs import CaseRef, Layout, SplitQuery
from rtseg.io.jsonfile import read_json
from rtseg.io.naming import nifti_stem

NAME = "msd"
SPLITS_FILE = "splits.json"
HOLDOUT_SEED = 12345


def holdout_split_ids(ids: list[str], q: SplitQuery, what: str) -> list[str]:
    """``splits.json`` ({split: [ids]}) beside the dataset if present, else a fixed 80/20 train/val split."""
    spl = q.root / SPLITS_FILE
    if spl.exists():
        table = read_json(spl, "splits file")
        if q.split not in table:
            raise DataError(f"{spl}: no split {q.split!r}; found {sorted(table)}")
        return sorted(table[q.split])
    order = sorted(ids)
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(len(order))
    n_val = max(1, len(order) // 5)
    val_ids = sorted(order[i] for i in perm[:n_val])
    if q.split == q.val_split:
        return val_ids
    if q.split == q.train_split:
        return sorted(set(order) - set(val_ids))
    raise DataError(f"{q.root}: {what} layout has splits {q.train_split!r} and {q.val_split!r} only "
                    f"(add {SPLITS_FILE} for more)")


def list_msd_split(q: SplitQuery) -> list[CaseRef]:
    dj = q.root / "dataset.json"
    if not dj.is_file():
        raise DataError(f"{q.root}: dataset.json not found (Decathlon layout is imagesTr/, labelsTr/, dataset.json)")
    meta = read_json(dj, "Decathlon dataset.json")
    refs = {}
    for entry in meta.get("training", []):
        img, lab = q.root / entry["image"], q.root / entry["label"]
        cid = nifti_stem(entry["image"]) or Path(entry["image"]).name
        if not img.exists() or not lab.exists():
            raise DataError(f"{dj}: case {cid}: file listed but missing ({img.name if not img.exists() else lab.name})")
        refs[cid] = CaseRef(cid, img, lab, NAME)
    if not refs:
        raise DataError(f"{dj}: no entries under 'training'")
    missing = [c for c in holdout_split_ids(list(refs), q, "MSD") if c not in refs]
    if missing:
        raise DataError(f"{q.root / SPLITS_FILE}: split {q.split!r} lists cases not in dataset.json: {', '.join(missing[:5])}")
    return [refs[c] for c in holdout_split_ids(list(refs), q, "MSD")]


LAYOUT = Layout(NAME, list_msd_split, "Decathlon: imagesTr/, labelsTr/, dataset.json ('training' pairs)")
