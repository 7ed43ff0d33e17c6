"""Find the cases of a split in any registered dataset layout and load them as Volumes.

Layouts (``DATASET.NAME``) are the registry in ``rtseg.io.layouts.registry``: legacy_npy (the original code
base's ``PATH/<split>/CT|SEG/*.npy``, ``prostateCT_vol``), NIfTI split folders or a flat folder with
``DATASET.SPLITS``, the Medical Segmentation Decathlon and nnU-Net v2 raw datasets. With ``DATASET.FOLD``
the training and validation splits are a cross-validation fold's parts (``rtseg.data.folds``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rtseg.config.schema import DatasetConfig
from rtseg.data.folds import fold_cases
from rtseg.errors import DataError
from rtseg.io.layouts.dataset_json import read_partial_labels
from rtseg.io.layouts.registry import CaseRef, SplitQuery, get_layout, list_split, read_case_image, read_case_labels
from rtseg.io.volume import Volume
from rtseg.labels import IGNORE_INDEX

__all__ = ["CaseRef", "list_cases", "load_case", "load_labels", "load_partial_labels", "split_query"]


def split_query(dataset: DatasetConfig, split: str) -> SplitQuery:
    """The DATASET keys a layout needs to list ``split``."""
    return SplitQuery(Path(dataset.PATH), split, dataset.TRAIN_SPLIT, dataset.VAL_SPLIT, dataset.TEST_SPLIT,
                      Path(dataset.SPLITS) if dataset.SPLITS else None, dataset.N_CLASSES)


def list_cases(dataset: DatasetConfig, split: str) -> list[CaseRef]:
    """The cases of ``split`` in the layout ``dataset.NAME`` under ``dataset.PATH``.

    With ``DATASET.FOLD`` (cross-validation, ``rtseg.data.folds``) the training split is that fold's
    training part and the validation split its held-out part, both drawn from the training cases."""
    if dataset.FOLD is None or split not in (dataset.TRAIN_SPLIT, dataset.VAL_SPLIT):
        return list_split(dataset.NAME, split_query(dataset, split))
    train = list_split(dataset.NAME, split_query(dataset, dataset.TRAIN_SPLIT))  # a VAL_SPLIT folder need not exist
    return fold_cases(dataset, train, held_out=split == dataset.VAL_SPLIT)


def load_case(ref: CaseRef, n_classes: int) -> tuple[Volume, Volume]:
    """Image and label volumes on the same grid; label values checked against N_CLASSES."""
    img = read_case_image(ref)
    lab = load_labels(ref)
    if img.shape != lab.shape:
        raise DataError(f"{ref.label}: label shape {lab.shape} does not match image shape {img.shape} ({ref.image.name})")
    if get_layout(ref.layout).has_geometry and not np.allclose(img.affine, lab.affine, atol=1e-3):
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
    return read_case_labels(ref)


def load_partial_labels(path: str | Path, case_ids: list[str], class_names: list[str]) -> dict[str, list[int]]:
    """Per-case contoured classes from JSON: {case_id: [names or indices]}, OpenKBP's train.json form or
    rtseg's dataset JSON (whose excluded organs count as not contoured). Background is always known;
    cases not listed are treated as fully labelled."""
    return read_partial_labels(path, case_ids, class_names)
