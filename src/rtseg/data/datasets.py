"""Find the cases of a split in any supported layout and load them as Volumes.

Layouts: legacy_npy, the original code base's (``PATH/<split>/CT|SEG/*.npy``), NIfTI split folders
(``PATH/<split>/<id>_ct.nii.gz`` + ``<id>_labels.nii.gz``) and the Medical
Segmentation Decathlon (``PATH/imagesTr``, ``PATH/labelsTr``, ``dataset.json``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from rtseg.config.schema import DatasetConfig
from rtseg.errors import DataError
from rtseg.io.jsonfile import read_json
from rtseg.io.naming import CT_SUFFIX, LABELS_SUFFIX, cases_in, ct_file, labels_file, nifti_stem
from rtseg.io.nifti import read_nifti
from rtseg.io.layouts import LEGACY_NPY
from rtseg.io.legacy_npy import CT_DIR, SEG_DIR, legacy_npy_case_ids, read_npy
from rtseg.io.volume import Volume
from rtseg.labels import IGNORE_INDEX


@dataclass(frozen=True)
class CaseRef:
    case_id: str
    image: Path
    label: Optional[Path]
    layout: str


def _read_splits(path: Path, split: str) -> list[str]:
    table = read_json(path, "DATASET.SPLITS")
    if split not in table:
        raise DataError(f"{path}: no split {split!r}; found {sorted(table)}")
    return [str(c) for c in table[split]]


def _nifti_split(root: Path, split: str, splits_file: Optional[Path] = None) -> list[CaseRef]:
    if splits_file is not None:
        refs = []
        for cid in _read_splits(splits_file, split):
            ct, lab = root / ct_file(cid), root / labels_file(cid)
            if not ct.exists() or not lab.exists():
                raise DataError(f"{splits_file}: case {cid} listed in split {split!r} but {ct.name if not ct.exists() else lab.name} is missing in {root}")
            refs.append(CaseRef(cid, ct, lab, "nifti"))
        return refs
    d = root / split
    if not d.is_dir():
        raise DataError(f"{d}: split folder not found (NIfTI layout is PATH/<split>/<id>_ct.nii.gz + <id>_labels.nii.gz)")
    cts, labs = cases_in(d, CT_SUFFIX), cases_in(d, LABELS_SUFFIX)
    if not cts:
        raise DataError(f"{d}: no *{ct_file('')} files found")
    only_ct, only_lab = sorted(set(cts) - set(labs)), sorted(set(labs) - set(cts))
    if only_lab:
        raise DataError(f"{d}: labels without CT: {', '.join(only_lab[:5])}")
    if only_ct:
        raise DataError(f"{d}: CT without labels: {', '.join(only_ct[:5])} (expected {labels_file('<id>')} beside each {ct_file('<id>')})")
    return [CaseRef(cid, cts[cid], labs[cid], "nifti") for cid in sorted(cts)]


def _legacy_npy_split(root: Path, split: str) -> list[CaseRef]:
    d = root / split
    if not d.is_dir():
        raise DataError(f"{d}: split folder not found (legacy_npy layout is PATH/<split>/CT/*.npy and PATH/<split>/SEG/*.npy)")
    return [CaseRef(cid, d / CT_DIR / f"{cid}.npy", d / SEG_DIR / f"{cid}.npy", LEGACY_NPY) for cid in legacy_npy_case_ids(d)]


def msd_split_ids(ids: list[str], split: str, root: Path, train: str, val: str) -> list[str]:
    """MSD has no validation split: use ``splits.json`` ({split: [ids]}) if present, else a fixed 80/20 split."""
    spl = root / "splits.json"
    if spl.exists():
        table = read_json(spl, "splits file")
        if split not in table:
            raise DataError(f"{spl}: no split {split!r}; found {sorted(table)}")
        return sorted(table[split])
    order = sorted(ids)
    perm = np.random.default_rng(12345).permutation(len(order))
    n_val = max(1, len(order) // 5)
    val_ids = sorted(order[i] for i in perm[:n_val])
    if split == val:
        return val_ids
    if split == train:
        return sorted(set(order) - set(val_ids))
    raise DataError(f"{root}: MSD layout has splits {train!r} and {val!r} only (add splits.json for more)")


def _msd_split(root: Path, split: str, train: str, val: str) -> list[CaseRef]:
    dj = root / "dataset.json"
    if not dj.is_file():
        raise DataError(f"{root}: dataset.json not found (Decathlon layout is imagesTr/, labelsTr/, dataset.json)")
    meta = read_json(dj, "Decathlon dataset.json")
    refs = {}
    for entry in meta.get("training", []):
        img, lab = root / entry["image"], root / entry["label"]
        cid = nifti_stem(entry["image"]) or Path(entry["image"]).name
        if not img.exists() or not lab.exists():
            raise DataError(f"{dj}: case {cid}: file listed but missing ({img.name if not img.exists() else lab.name})")
        refs[cid] = CaseRef(cid, img, lab, "msd")
    if not refs:
        raise DataError(f"{dj}: no entries under 'training'")
    return [refs[c] for c in msd_split_ids(list(refs), split, root, train, val)]


def list_cases(dataset: DatasetConfig, split: str) -> list[CaseRef]:
    """The cases of ``split`` in the layout ``dataset.NAME`` under ``dataset.PATH``.

    With ``DATASET.FOLD`` (cross-validation, ``rtseg.data.folds``) the training split is that fold's
    training part and the validation split its held-out part, both drawn from the training cases."""
    if dataset.FOLD is None or split not in (dataset.TRAIN_SPLIT, dataset.VAL_SPLIT):
        return _layout_cases(dataset, split)
    from rtseg.data.folds import fold_cases  # folds reads labels through this module

    train = _layout_cases(dataset, dataset.TRAIN_SPLIT)  # a VAL_SPLIT folder need not exist
    return fold_cases(dataset, train, held_out=split == dataset.VAL_SPLIT)


def _layout_cases(dataset: DatasetConfig, split: str) -> list[CaseRef]:
    root = Path(dataset.PATH)
    if not root.is_dir():
        raise DataError(f"DATASET.PATH {root}: folder not found")
    if dataset.NAME == "prostateCT_vol":
        return _legacy_npy_split(root, split)
    if dataset.NAME == "nifti":
        return _nifti_split(root, split, Path(dataset.SPLITS) if dataset.SPLITS else None)
    if dataset.NAME == "msd":
        return _msd_split(root, split, dataset.TRAIN_SPLIT, dataset.VAL_SPLIT)
    raise DataError(f"DATASET.NAME {dataset.NAME!r}: expected prostateCT_vol, nifti or msd")


def load_case(ref: CaseRef, n_classes: int) -> tuple[Volume, Volume]:
    """Image and label volumes on the same grid; label values checked against N_CLASSES."""
    img = read_npy(ref.image) if ref.layout == LEGACY_NPY else read_nifti(ref.image)
    lab = load_labels(ref)
    if img.shape != lab.shape:
        raise DataError(f"{ref.label}: label shape {lab.shape} does not match image shape {img.shape} ({ref.image.name})")
    if ref.layout != LEGACY_NPY and not np.allclose(img.affine, lab.affine, atol=1e-3):
        raise DataError(f"{ref.label}: label affine differs from the image's ({ref.image.name}); they must share one grid")
    labels = np.asarray(lab.array)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.mod(labels, 1) == 0):
            raise DataError(f"{ref.label}: label values must be integers, found {labels.dtype} with fractions")
    labels = labels.astype(np.int64)
    bad = np.unique(labels[(labels < 0) | ((labels >= n_classes) & (labels != IGNORE_INDEX))])
    if bad.size:
        raise DataError(f"{ref.label}: label values {bad[:5].tolist()} outside 0..{n_classes - 1} "
                        f"(N_CLASSES={n_classes}; {IGNORE_INDEX} = ignore)")
    return img, lab.with_array(labels.astype(np.uint8))


def load_labels(ref: CaseRef) -> Volume:
    """The label volume alone, as stored (``load_case`` checks it against the image)."""
    if ref.label is None:
        raise DataError(f"{ref.image}: case {ref.case_id} has no label file")
    return read_npy(ref.label) if ref.layout == LEGACY_NPY else read_nifti(ref.label)


def load_partial_labels(path: str | Path, case_ids: list[str], class_names: list[str]) -> dict[str, list[int]]:
    """Per-case contoured classes from JSON: {case_id: [names or indices]} or OpenKBP's train.json form.

    Background is always known. Cases not listed are treated as fully labelled.
    """
    p = Path(path)
    table = read_json(p, "DATASET.PARTIAL_LABELS")
    if isinstance(table, dict) and "cases" in table and isinstance(table["cases"], (dict, list)):
        table = table["cases"]
    if isinstance(table, list):  # [{"id": ..., "organs"/"labels"/"classes": [...]}, ...]
        flat = {}
        for e in table:
            cid = e.get("id") or e.get("case") or e.get("case_id")
            organs = e.get("organs", e.get("classes", e.get("labels")))
            if cid is None or organs is None:
                raise DataError(f"{p}: list entries need 'id' and 'organs' keys, found {sorted(e)}")
            flat[str(cid)] = organs
        table = flat
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    out: dict[str, list[int]] = {}
    for cid in case_ids:
        if cid not in table:
            continue
        known = {0}
        for item in table[cid]:
            if isinstance(item, int) and 0 <= item < len(class_names):
                known.add(item)
            elif isinstance(item, str) and item.lower() in lookup:
                known.add(lookup[item.lower()])
            else:
                raise DataError(f"{p}: case {cid}: unknown class {item!r}; valid: {class_names}")
        out[cid] = sorted(known)
    return out
