"""Whole-dataset conversions: PNG slices / legacy_npy <-> NIfTI pairs (DICOM archives: ``rtseg.io.archive.convert``).

The NIfTI dataset layout is flat: ``<case>_ct.nii.gz`` + ``<case>_labels.nii.gz``.
Every conversion goes patient by patient: a bad patient is reported (by case
name, i.e. folder or file name, never DICOM patient attributes) and skipped,
the others go on. A ``conversion_report.json`` in the output folder lists what
was converted, what failed and why, and per-case notes (e.g. unmapped ROIs).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from rtseg.errors import DataError, RtsegError
from rtseg.io.atomic import atomic_path
from rtseg.io.dicom.geometry import LPS_TO_RAS
from rtseg.io.legacy_npy import CT_DIR, SEG_DIR, legacy_npy_stems, read_npy, to_legacy_npy_array, write_legacy_npy_case
from rtseg.io.naming import CT_SUFFIX, LABELS_SUFFIX, cases_in, ct_file, labels_file
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.png_slices import PngReading, natural_key, png_case_to_volumes
from rtseg.io.volume import Volume

log = logging.getLogger(__name__)

REPORT_NAME = "conversion_report.json"
_KEEP_DTYPES = (np.dtype(np.int16), np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass
class ConversionReport:
    converted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case, reason)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        total = len(self.converted) + len(self.failed)
        return f"converted {len(self.converted)} of {total} cases" + (f", {len(self.failed)} failed" if self.failed else "")

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2))
        return target


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name))


def _need_dir(folder: str | os.PathLike[str]) -> Path:
    d = Path(folder)
    if not d.is_dir():
        raise DataError(f"{d}: input folder not found")
    return d


def _run_cases(
    cases: Sequence[tuple[str, Callable[[], str | None]]], out_dir: Path, desc: str, progress: bool
) -> ConversionReport:
    """Run one conversion per case; failures are recorded, the rest go on."""
    report = ConversionReport()
    for name, job in tqdm(cases, desc=desc, unit="case", disable=None if progress else True):
        try:
            note = job()
        except RtsegError as exc:
            report.failed.append((name, str(exc)))
            log.debug("%s: skipped: %s", name, exc)
            continue
        except Exception as exc:  # one malformed patient must not stop a batch
            msg = f"unexpected {type(exc).__name__}: {exc}"
            report.failed.append((name, msg))
            log.debug("%s: skipped: %s", name, msg)
            continue
        report.converted.append(name)
        if note:
            report.notes[name] = note
    report.write_json(out_dir / REPORT_NAME)
    return report


def _write_pair(out_dir: Path, case: str, ct: Volume, labels: Volume) -> None:
    ct_dtype = ct.array.dtype if ct.array.dtype in _KEEP_DTYPES else np.float32
    write_nifti(ct, out_dir / ct_file(case), dtype=ct_dtype)
    write_nifti(labels, out_dir / labels_file(case), dtype=np.uint8)


# ------------------------------------------------------------------ PNG --

def convert_png_dataset(
    input_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    reading: PngReading,
    progress: bool = True,
) -> ConversionReport:
    """``input_dir/<case>/CT/*.png`` + ``MASK/*.png`` -> NIfTI pairs (see :func:`png_case_to_volumes`)."""
    src, out = _need_dir(input_dir), Path(out_dir)
    cases = _subdirs(src)
    if not cases:
        raise DataError(f"{src}: no patient folders found (expected <case>/CT/*.png and <case>/MASK/*.png)")

    def job(case: Path) -> Callable[[], str | None]:
        def run() -> str | None:
            img, lab, rep = png_case_to_volumes(case, reading)
            _write_pair(out, case.name, img, lab)
            if rep.unmatched_pixels:
                return f"{rep.unmatched_pixels} mask pixels matched no colour within {reading.tolerance:g} and were set to background"
            return None
        return run

    return _run_cases([(c.name, job(c)) for c in cases], out, "png-dataset", progress)


# ----------------------------------------------------------- legacy_npy --

def nifti_case_ids(folder: Path) -> tuple[list[str], list[str]]:
    """(case ids with a CT file, ids that only have a labels file)."""
    cts, labs = set(cases_in(folder, CT_SUFFIX)), set(cases_in(folder, LABELS_SUFFIX))
    return sorted(cts, key=natural_key), sorted(labs - cts, key=natural_key)


def _splits(src: Path, is_split: Callable[[Path], bool], what: str) -> list[tuple[str, Path]]:
    if is_split(src):
        return [("", src)]
    found = [(d.name, d) for d in _subdirs(src) if is_split(d)]
    if not found:
        raise DataError(f"{src}: no {what} found, neither here nor in its sub-folders (one per split)")
    return found


def _labels_as_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.integer) and not np.array_equal(arr, np.round(arr)):
        raise DataError(f"{where}: labels hold non-integer values; expected class indices")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise DataError(f"{where}: label values {int(arr.min())}..{int(arr.max())}; expected 0..255")
    return arr.astype(np.uint8)


def _fail(exc: RtsegError) -> Callable[[], str | None]:
    def run() -> str | None:
        raise exc
    return run


def _nifti_case_to_legacy_npy(d: Path, cid: str, target: Path, n_classes: int | None, onehot: bool) -> str | None:
    lab_path = d / labels_file(cid)
    if not lab_path.is_file():
        raise DataError(f"{d / ct_file(cid)}: no matching {lab_path.name}")
    ct, lab = read_nifti(d / ct_file(cid)), read_nifti(lab_path)
    if not lab.same_grid(ct):
        raise DataError(f"{lab_path}: labels (shape {lab.shape}) are not on the CT grid (shape {ct.shape})")
    seg = _labels_as_uint8(to_legacy_npy_array(lab), str(lab_path))
    if n_classes is not None and seg.size and int(seg.max()) >= n_classes:
        raise DataError(f"{lab_path}: label {int(seg.max())} found, but only {n_classes} classes")
    ct_arr = to_legacy_npy_array(ct)
    ct_arr = ct_arr if ct_arr.dtype in _KEEP_DTYPES else ct_arr.astype(np.float32)
    write_legacy_npy_case(target, cid, ct_arr, seg, n_classes if onehot else None)
    return None


def convert_nifti_to_legacy_npy(
    input_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    n_classes: int | None = None,
    onehot: bool = True,
    progress: bool = True,
) -> ConversionReport:
    """NIfTI pairs -> the legacy_npy layout (the original code base's ``CT/``, ``SEG/`` and ``SEG_onehot/`` .npy files).

    A folder of pairs becomes one split folder; a folder of split sub-folders
    (train/, val/, ...) becomes the same splits. Volumes are put in LPS axis
    order and stored as (D, H, W) = (slice, row, column); the geometry is
    lost (the legacy_npy layout has none). ``n_classes`` (for the one-hot files)
    defaults to the largest label in the dataset + 1.
    """
    src, out = _need_dir(input_dir), Path(out_dir)
    splits = _splits(src, lambda d: bool(cases_in(d, CT_SUFFIX)), f"*{ct_file('')} files")
    if onehot and n_classes is None:
        n_classes = 2
        for _, d in splits:
            for lab in cases_in(d, LABELS_SUFFIX).values():
                try:
                    n_classes = max(n_classes, int(read_nifti(lab).array.max()) + 1)
                except (RtsegError, ValueError):
                    pass  # reported when that case is converted
    cases: list[tuple[str, Callable[[], str | None]]] = []
    for split, d in splits:
        ids, orphans = nifti_case_ids(d)
        target = out / split if split else out
        prefix = f"{split}/" if split else ""
        cases += [(prefix + cid, partial(_nifti_case_to_legacy_npy, d, cid, target, n_classes, onehot)) for cid in ids]
        cases += [(prefix + cid, _fail(DataError(f"{d / labels_file(cid)}: no matching {ct_file(cid)}")))
                  for cid in orphans]
    return _run_cases(cases, out, "nifti-to-legacy-npy", progress)


def _legacy_npy_case_to_nifti(d: Path, cid: str, target: Path, affine: np.ndarray) -> str | None:
    ct_path, seg_path = d / CT_DIR / f"{cid}.npy", d / SEG_DIR / f"{cid}.npy"
    if not ct_path.is_file():
        raise DataError(f"{seg_path}: no matching {CT_DIR}/{cid}.npy")
    if not seg_path.is_file():
        raise DataError(f"{ct_path}: no matching {SEG_DIR}/{cid}.npy")
    ct, seg = read_npy(ct_path).array, read_npy(seg_path).array
    if ct.shape != seg.shape:
        raise DataError(f"{seg_path}: shape {seg.shape} differs from its CT {ct.shape}")
    ct_arr = ct if ct.dtype in _KEEP_DTYPES else ct.astype(np.float32)
    ct_vol = Volume(np.ascontiguousarray(ct_arr.transpose(2, 1, 0)), affine)
    lab_vol = Volume(np.ascontiguousarray(_labels_as_uint8(seg, str(seg_path)).transpose(2, 1, 0)), affine)
    _write_pair(target, cid, ct_vol, lab_vol)
    return None


def convert_legacy_npy_to_nifti(
    input_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    progress: bool = True,
) -> ConversionReport:
    """The legacy_npy layout -> NIfTI pairs (inverse of :func:`convert_nifti_to_legacy_npy`).

    ``spacing`` is (x, y, z) = (column, row, slice) size in mm; the legacy_npy
    files have none. Axes are taken as LPS, as :func:`convert_nifti_to_legacy_npy` writes
    them; the origin is 0. A split folder (with CT/ and SEG/) gives a flat
    output; a folder of splits gives one output sub-folder per split.
    """
    src, out = _need_dir(input_dir), Path(out_dir)
    splits = _splits(src, lambda d: (d / CT_DIR).is_dir(), f"{CT_DIR}/ folder of .npy volumes")
    affine = LPS_TO_RAS @ np.diag([float(spacing[0]), float(spacing[1]), float(spacing[2]), 1.0])
    cases: list[tuple[str, Callable[[], str | None]]] = []
    for split, d in splits:
        ids = legacy_npy_stems(d / CT_DIR) | legacy_npy_stems(d / SEG_DIR)
        target = out / split if split else out
        prefix = f"{split}/" if split else ""
        cases += [(prefix + cid, partial(_legacy_npy_case_to_nifti, d, cid, target, affine)) for cid in sorted(ids, key=natural_key)]
    return _run_cases(cases, out, "legacy-npy-to-nifti", progress)

