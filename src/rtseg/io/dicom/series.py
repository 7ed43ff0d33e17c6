"""DICOM CT series <-> Volume: finding the series in a folder and reading one.

The geometry (``rtseg.io.dicom.geometry``) comes from Image Orientation/Position
(Patient) the way SimpleITK/GDCM build it, but refuses what they would silently
get wrong: missing slices, gantry tilt, mixed slice sizes. Header values are
read through ``rtseg.io.dicom.values``; the test-series writer is
``rtseg.io.dicom.write`` (also importable from here). Array axes follow DICOM: axis 0 = column index (x), axis 1 = row
index (y), axis 2 = slice index along the normal; the affine is RAS+.

``Volume.meta["dicom"]`` keeps what an RTSTRUCT written against this series
needs (UIDs per slice in array order, and the patient/study attributes it must
repeat). Those attributes sit in a container whose repr hides them, so they
never reach a log or an error message.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from rtseg.errors import DataError
from rtseg.io.dicom.frames import CT_STORAGE_CLASSES, expand_frames, is_enhanced
from rtseg.io.dicom.geometry import LPS_TO_RAS, SliceHeader, slice_geometry
from rtseg.io.dicom.pixels import PixelReader
from rtseg.io.dicom.values import count, parse_all
from rtseg.io.integrity import check_finite, check_size
from rtseg.io.volume import Volume
# The writers live in rtseg.io.dicom.write; this module's import path keeps serving them.
from rtseg.io.dicom.write import new_dicom_dataset, write_dicom_series  # noqa: F401  (re-exports)

__all__ = [
    "HEADER_KEYWORDS", "LPS_TO_RAS", "PATIENT_STUDY_KEYWORDS", "PatientStudyAttributes", "SeriesInfo",
    "list_dicom_series", "looks_like_dicom", "new_dicom_dataset", "read_dicom_files", "read_dicom_series", "read_header", "scan_dicom_folder", "write_dicom_series",
]

log = logging.getLogger(__name__)

# Attributes of the Patient, General Study and Patient Study modules that an
# RTSTRUCT (or any derived object) must repeat from the images it refers to.
PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)

HEADER_KEYWORDS: tuple[str, ...] = PATIENT_STUDY_KEYWORDS + (
    "Modality", "SeriesInstanceUID", "SeriesDescription", "SeriesNumber", "SOPClassUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "Rows", "Columns", "NumberOfFrames",
)
"""Header values this module reads: parsed once while scanning, so a malformed one is refused there."""

_NON_DICOM_SUFFIXES = {
    ".txt", ".md", ".json", ".csv", ".xml", ".html", ".pdf", ".png", ".jpg", ".jpeg",
    ".gz", ".nii", ".npy", ".npz", ".zip", ".yml", ".yaml", ".py", ".log",
}


class PatientStudyAttributes:
    """Keyword -> value of identifying attributes, kept only to be copied into derived DICOM objects.

    Printing it never shows the values, and it is deliberately not a ``dict``
    so that ``json.dumps(volume.meta)`` fails instead of leaking them.
    """

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self._values = dict(values or {})

    def keys(self) -> Iterable[str]:
        return self._values.keys()

    def items(self) -> Iterable[tuple[str, Any]]:
        return self._values.items()

    def __getitem__(self, keyword: str) -> Any:
        return self._values[keyword]

    def __contains__(self, keyword: object) -> bool:
        return keyword in self._values

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<{len(self)} patient/study attributes, hidden>"

    __str__ = __repr__


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder (no patient information)."""

    uid: str
    modality: str
    n_slices: int
    description: str

    def describe(self) -> str:
        uid = self.uid or "<empty SeriesInstanceUID>"
        desc = f", {self.description!r}" if self.description else ""
        return f"{uid} ({self.modality or '?'}, {self.n_slices} slices{desc})"


def looks_like_dicom(path: Path) -> bool:
    """A .dcm/.dicom/.ima file, or one with the DICM marker (files without extension); never DICOMDIR."""
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    if path.suffix.lower() in _NON_DICOM_SUFFIXES or path.name.upper() == "DICOMDIR":
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def scan_dicom_folder(folder: str | os.PathLike[str]) -> list[tuple[Path, Dataset]]:
    """Headers (no pixel data) of every DICOM file under ``folder``, recursively.

    Files that do not look like DICOM (no ``DICM`` marker, no .dcm suffix) are
    ignored; a file that looks like DICOM but cannot be parsed is an error.
    """
    root = Path(folder)
    if not root.exists():
        raise DataError(f"{root}: folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of DICOM files, found a file")
    out: list[tuple[Path, Dataset]] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if not looks_like_dicom(p):
            log.debug("ignoring non-DICOM file %s", p.name)
            continue
        out.append((p, read_header(p)))
    return out


def read_header(p: Path) -> Dataset:
    """One file's header (no pixel data), its values this module reads parsed; DataError if it is not DICOM."""
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise DataError(f"{p}: not a readable DICOM file ({type(exc).__name__})") from None
    if len(ds) == 0:
        raise DataError(f"{p}: not a readable DICOM file (no data elements)")
    parse_all(ds, p, HEADER_KEYWORDS)
    if "SOPClassUID" not in ds and "Modality" not in ds:  # garbage after a DICM marker parses to stray elements
        raise DataError(f"{p}: not a readable DICOM file (neither SOPClassUID nor Modality)")
    return ds


def _is_image(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds and ds.get("Modality", "") not in ("RTDOSE", "RTSTRUCT", "RTPLAN")


def _series_infos(headers: Iterable[SliceHeader]) -> dict[str, list[SliceHeader]]:
    groups: dict[str, list[SliceHeader]] = {}
    for h in headers:
        groups.setdefault(str(h.ds.get("SeriesInstanceUID", "") or ""), []).append(h)
    return groups


def _info(uid: str, hs: list[SliceHeader]) -> SeriesInfo:
    ds = hs[0].ds
    n = sum(count(h.ds, "NumberOfFrames", h.path, 1) if is_enhanced(h.ds) else 1 for h in hs)
    return SeriesInfo(uid, str(ds.get("Modality", "") or ""), n, str(ds.get("SeriesDescription", "") or ""))


def list_dicom_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The image series in a folder (RTSTRUCT and other non-image objects left out)."""
    headers = [SliceHeader(p, ds) for p, ds in scan_dicom_folder(folder) if _is_image(ds)]
    return [_info(uid, hs) for uid, hs in sorted(_series_infos(headers).items())]


def _select_series(folder: Path, headers: list[SliceHeader], series_uid: str | None) -> list[SliceHeader]:
    images = [h for h in headers if _is_image(h.ds)]
    broken = [h for h in headers if not _is_image(h.ds) and (h.ds.get("Modality") == "CT" or h.ds.get("SOPClassUID") in CT_STORAGE_CLASSES)]
    if broken:  # else a damaged slice would silently drop out of its series
        raise DataError(f"{broken[0].path}: a CT slice without Rows/Columns; the file is damaged")
    if not images:
        if headers:
            kinds = sorted({str(h.ds.get("Modality", "?")) for h in headers})
            raise DataError(f"{folder}: no image slices among {len(headers)} DICOM files (found only {', '.join(kinds)})")
        raise DataError(f"{folder}: no DICOM files found (expected a folder of CT slices)")
    groups = _series_infos(images)
    listing = "; ".join(_info(uid, hs).describe() for uid, hs in sorted(groups.items()))
    if series_uid is not None:
        if series_uid not in groups:
            raise DataError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found: {listing}")
        return groups[series_uid]
    if len(groups) > 1:
        raise DataError(f"{folder}: holds {len(groups)} image series, choose one by SeriesInstanceUID (--series-uid): {listing}")
    return next(iter(groups.values()))


def read_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Read one CT series as a Volume in Hounsfield units (int16 when exact, else float32)."""
    root = Path(folder)
    headers = [SliceHeader(p, ds) for p, ds in scan_dicom_folder(root)]
    return _series_volume(root, _select_series(root, headers, series_uid))


def read_dicom_files(paths: Iterable[str | os.PathLike[str]], where: str | os.PathLike[str]) -> Volume:
    """Read the CT series made of exactly these files (e.g. one series of a flat archive dump); ``where``
    names it in errors and becomes ``meta["source"]``."""
    files = sorted(Path(p) for p in paths)
    return _series_volume(Path(where), _select_series(Path(where), [SliceHeader(p, read_header(p)) for p in files], None))


def _series_volume(root: Path, hs: list[SliceHeader]) -> Volume:
    modality = str(hs[0].ds.get("Modality", "") or "")
    if modality != "CT":
        raise DataError(f"{root}: series modality is {modality or 'missing'}, expected CT")
    hs, lps = slice_geometry(root, expand_frames(hs))

    rows, cols = count(hs[0].ds, "Rows", hs[0].path), count(hs[0].ds, "Columns", hs[0].path)
    check_size(root, (cols, rows, len(hs)), 4, "Columns x Rows x slices")
    # slices stacked as they are stored (each one contiguous), turned to (columns, rows, slices) by one copy
    stack = np.empty((len(hs), rows, cols), dtype=np.float32)  # exact for integer HU (|v| < 2**24)
    exact, pixels = True, PixelReader()
    for k, h in enumerate(hs):
        px, slope, intercept = pixels.read(h)
        if px.shape != (rows, cols):
            raise DataError(f"{h.path}: pixel data is {px.shape[0]}x{px.shape[1]}, header says {rows}x{cols}")
        exact &= slope.is_integer() and intercept.is_integer()
        with np.errstate(over="ignore", invalid="ignore"):  # an absurd slope overflows: refused just below
            np.add(px.astype(np.float64) * slope, intercept, out=stack[k], casting="same_kind")
        check_finite(f"{h.path} (RescaleSlope {slope:g}, RescaleIntercept {intercept:g})", stack[k])
    hu = stack.transpose(2, 1, 0)
    if exact and stack.min() >= np.iinfo(np.int16).min and stack.max() <= np.iinfo(np.int16).max:
        array = np.ascontiguousarray(hu, dtype=np.int16)
    else:
        array = np.ascontiguousarray(hu)
    del stack, hu

    first = hs[0].ds
    patient_study = PatientStudyAttributes(
        {kw: _plain(first.get(kw)) for kw in PATIENT_STUDY_KEYWORDS if kw in first}
    )
    meta = {
        "source": str(root),
        "dicom": {
            "study_instance_uid": str(first.get("StudyInstanceUID", "") or ""),
            "series_instance_uid": str(first.get("SeriesInstanceUID", "") or ""),
            "frame_of_reference_uid": str(first.get("FrameOfReferenceUID", "") or ""),
            "position_reference_indicator": str(first.get("PositionReferenceIndicator", "") or ""),
            "modality": modality,
            "series_description": str(first.get("SeriesDescription", "") or ""),
            "series_number": str(first.get("SeriesNumber", "") or ""),
            "sop_class_uids": [str(h.ds.get("SOPClassUID", "") or "") for h in hs],
            "sop_instance_uids": [str(h.ds.get("SOPInstanceUID", "") or "") for h in hs],
            "frame_numbers": [h.frame for h in hs],  # None for single-frame slices
            "files": [str(h.path) for h in hs],
            "patient_study": patient_study,
        },
    }
    return Volume(array, LPS_TO_RAS @ lps, meta)


def _plain(value: Any) -> Any:
    """Element value as str / number / list of those (PersonName and MultiValue flattened)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [_plain(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return str(value)
