"""How case files are named: the one suffix rule every reader and writer of NIfTI cases follows.

A case ``<id>`` is ``<id>_ct.nii.gz`` (image) + ``<id>_labels.nii.gz`` (labels) in a dataset,
and ``rtseg predict`` writes ``<id><suffix>`` per output format (``_pred.nii.gz``, ``_rtstruct.dcm``,
``_seg.dcm``, ``_overlay.png``, ``_review.html``; :func:`output_file`); ``rtseg serve`` names a job's
outputs the same way after :func:`outbox_prefix`. Readers are lenient: an image file's case id
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
    return output_file(case, PREDICTION_SUFFIX + NIFTI_EXTENSION)


#: File suffixes of the output formats of ``rtseg predict`` / ``rtseg serve`` (``<case><suffix>``).
RTSTRUCT_SUFFIX, SEG_SUFFIX, OVERLAY_SUFFIX = "_rtstruct.dcm", "_seg.dcm", "_overlay.png"
DICOM_EXTENSION = ".dcm"


def output_file(case: str, suffix: str) -> str:
    """The one rule for an output's file name: ``<case><suffix>`` (``p01`` + ``_seg.dcm`` -> ``p01_seg.dcm``)."""
    if not suffix or "/" in suffix or "\\" in suffix:
        raise ValueError(f"output suffix {suffix!r}: expected a file name ending such as '_seg.dcm'")
    return f"{case}{suffix}"


def outbox_prefix(job_id: int, series_hash: str) -> str:
    """What ``rtseg serve`` calls a job's outputs instead of a case name (no patient or series UID in it)."""
    return f"job{job_id:06d}_{series_hash}"


def is_dicom_file_name(path: str | os.PathLike[str]) -> bool:
    """Whether an output is a DICOM object (what a DICOM destination can send)."""
    return Path(path).name.endswith(DICOM_EXTENSION)


#: Review outputs of ``rtseg predict`` per case: contour QA, probabilities, review page.
QA_SUFFIX, PROBABILITIES_SUFFIX, REVIEW_PAGE_SUFFIX = "_qa.json", "_prob" + NIFTI_EXTENSION, "_review.html"


def review_files(case: str) -> tuple[str, str, str]:
    """(qa.json, probabilities NIfTI, review page) file names of a case."""
    return output_file(case, QA_SUFFIX), output_file(case, PROBABILITIES_SUFFIX), output_file(case, REVIEW_PAGE_SUFFIX)


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
