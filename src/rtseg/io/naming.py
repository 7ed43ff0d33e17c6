"""How case files are named: the one suffix rule every reader and writer of NIfTI cases follows.

A case ``<id>`` is ``<id>_ct.nii.gz`` (image) + ``<id>_labels.nii.gz`` (labels) in a dataset,
and ``rtseg predict`` writes ``<id>_pred.nii.gz``. Readers are lenient: an image file's case id
is its stem minus one of ``IMAGE_SUFFIXES``, a label file's minus one of ``LABEL_SUFFIXES``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from rtseg.io.nifti import NIFTI_SUFFIXES

NIFTI_EXTENSION = ".nii.gz"
LIST_MAX = 8  # file names an error message lists before '... and N more'
CT_SUFFIX, LABELS_SUFFIX, PREDICTION_SUFFIX = "_ct", "_labels", "_pred"
#: Stripped from an image file's stem to get its case id (nnU-Net's ``_0000`` included).
IMAGE_SUFFIXES: tuple[str, ...] = (CT_SUFFIX, "_image", "_img", "_0000")
#: Stripped from a label file's stem to get its case id (``<id>_pred.nii.gz`` -> ``<id>``).
LABEL_SUFFIXES: tuple[str, ...] = (LABELS_SUFFIX, "_label", PREDICTION_SUFFIX, "_seg", "_gt", "_mask")


def ct_file(case: str) -> str:
    return f"{case}{CT_SUFFIX}{NIFTI_EXTENSION}"


def labels_file(case: str) -> str:
    return f"{case}{LABELS_SUFFIX}{NIFTI_EXTENSION}"


def prediction_file(case: str) -> str:
    return f"{case}{PREDICTION_SUFFIX}{NIFTI_EXTENSION}"


#: Review outputs of ``rtseg predict`` per case: contour QA, probabilities, review page.
QA_SUFFIX, PROBABILITIES_SUFFIX, REVIEW_PAGE_SUFFIX = "_qa.json", "_prob" + NIFTI_EXTENSION, "_review.html"


def review_files(case: str) -> tuple[str, str, str]:
    """(qa.json, probabilities NIfTI, review page) file names of a case."""
    return case + QA_SUFFIX, case + PROBABILITIES_SUFFIX, case + REVIEW_PAGE_SUFFIX


def nifti_stem(path: str | os.PathLike[str]) -> Optional[str]:
    """File name without ``.nii.gz`` / ``.nii``; None for a file that is not NIfTI."""
    name = Path(path).name
    return next((name[: -len(s)] for s in NIFTI_SUFFIXES if name.endswith(s)), None)


def _strip(stem: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def image_case_id(path: str | os.PathLike[str]) -> str:
    """``case001_ct.nii.gz`` -> ``case001``, so ``case001_pred.nii.gz`` pairs with ``case001_labels.nii.gz``."""
    stem = nifti_stem(path)
    return _strip(stem if stem is not None else Path(path).name, IMAGE_SUFFIXES)


def label_case_id(path: str | os.PathLike[str]) -> Optional[str]:
    """Case id of a NIfTI label file; None for images (stem ends with an image suffix) and non-NIfTI files."""
    stem = nifti_stem(path)
    if stem is None or stem.endswith(IMAGE_SUFFIXES):
        return None
    return _strip(stem, LABEL_SUFFIXES)


def is_label_file(path: str | os.PathLike[str]) -> bool:
    """A NIfTI whose stem ends with a label suffix (``_labels``, ``_pred``, ``_seg``, ...) or is rtseg's
    probabilities output: ground truth or an earlier prediction, never a CT to contour."""
    stem = nifti_stem(path)
    if stem is None:
        return False
    return stem.endswith(LABEL_SUFFIXES) or Path(path).name.endswith(PROBABILITIES_SUFFIX)


def cases_in(folder: Path, suffix: str) -> dict[str, Path]:
    """``{id: path}`` for the files ``<id><suffix>.nii.gz`` in ``folder`` (a dataset's CT or labels files)."""
    tail = suffix + NIFTI_EXTENSION
    return {p.name[: -len(tail)]: p for p in folder.glob(f"*{tail}")}


def listed(names: Iterable[str], most: int = LIST_MAX) -> str:
    """Sorted names for an error message, the first ``most`` of them and how many more."""
    ordered = sorted(names)
    more = f" and {len(ordered) - most} more" if len(ordered) > most else ""
    return ", ".join(ordered[:most]) + more


def unpaired(*groups: tuple[str, Iterable[str]]) -> str:
    """``"CT without SEG: p2; SEG without CT: p7"`` for the groups of files lacking a partner; "" if none do."""
    parts = []
    for what, names in groups:
        names = list(names)
        if names:
            parts.append(f"{what}: {listed(names)}")
    return "; ".join(parts)
