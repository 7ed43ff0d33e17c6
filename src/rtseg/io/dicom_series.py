"""DICOM CT series <-> Volume.

Reading builds the geometry from Image Orientation/Position (Patient) the way
SimpleITK/GDCM do (sort along the slice normal, spacing from positions) but
refuses what they would silently get wrong: missing slices, gantry tilt, mixed
slice sizes. Array axes follow DICOM: axis 0 = column index (x), axis 1 = row
index (y), axis 2 = slice index along the normal; the affine is RAS+.

``Volume.meta["dicom"]`` keeps what an RTSTRUCT written against this series
needs (UIDs per slice in array order, and the patient/study attributes it must
repeat). Those attributes sit in a container whose repr hides them, so they
never reach a log or an error message.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from rtseg import __version__
from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.dicom_values import count, float_list, parse_all, rescale, single_slice_spacing
from rtseg.io.integrity import check_finite, check_size, check_spacing
from rtseg.io.volume import Volume

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Flips x and y: DICOM patient coordinates (LPS) <-> NIfTI world (RAS). Its own inverse."""

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


@dataclass(frozen=True)
class _Header:
    path: Path
    ds: Dataset


def _looks_like_dicom(path: Path) -> bool:
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
        if not _looks_like_dicom(p):
            log.debug("ignoring non-DICOM file %s", p.name)
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types for corrupt files
            raise DataError(f"{p}: not a readable DICOM file ({type(exc).__name__})") from None
        if len(ds) == 0:
            raise DataError(f"{p}: not a readable DICOM file (no data elements)")
        parse_all(ds, p, HEADER_KEYWORDS)
        if "SOPClassUID" not in ds and "Modality" not in ds:  # garbage after a DICM marker parses to stray elements
            raise DataError(f"{p}: not a readable DICOM file (neither SOPClassUID nor Modality)")
        out.append((p, ds))
    return out


def _is_image(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds and ds.get("Modality", "") not in ("RTDOSE", "RTSTRUCT", "RTPLAN")


def _series_infos(headers: Iterable[_Header]) -> dict[str, list[_Header]]:
    groups: dict[str, list[_Header]] = {}
    for h in headers:
        groups.setdefault(str(h.ds.get("SeriesInstanceUID", "") or ""), []).append(h)
    return groups


def _info(uid: str, hs: list[_Header]) -> SeriesInfo:
    ds = hs[0].ds
    return SeriesInfo(uid, str(ds.get("Modality", "") or ""), len(hs), str(ds.get("SeriesDescription", "") or ""))


def list_dicom_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The image series in a folder (RTSTRUCT and other non-image objects left out)."""
    headers = [_Header(p, ds) for p, ds in scan_dicom_folder(folder) if _is_image(ds)]
    return [_info(uid, hs) for uid, hs in sorted(_series_infos(headers).items())]


def _select_series(folder: Path, headers: list[_Header], series_uid: str | None) -> list[_Header]:
    images = [h for h in headers if _is_image(h.ds)]
    broken = [h for h in headers if not _is_image(h.ds) and (h.ds.get("Modality") == "CT" or h.ds.get("SOPClassUID") == CTImageStorage)]
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


def _fmt(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(f"{x:.4g}" for x in value) + "]"
    return str(value)


def _check_same(folder: Path, hs: list[_Header], what: str, values: list[Any], same: Any) -> None:
    ref = values[0]
    bad = [h.path.name for h, v in zip(hs, values) if not same(v, ref)]
    if bad:
        counts = Counter(_fmt(v) for v in values)
        summary = ", ".join(f"{k} ({n} slice{'s' if n > 1 else ''})" for k, n in counts.most_common(4))
        raise DataError(f"{folder}: slices have mixed {what}: {summary}; e.g. {bad[0]} differs from {hs[0].path.name}")


def _geometry(folder: Path, hs: list[_Header]) -> tuple[list[_Header], np.ndarray]:
    """Sort slices along the normal, validate spacing, return (sorted headers, LPS affine)."""
    iops = [float_list(h.ds, "ImageOrientationPatient", 6, h.path) for h in hs]
    ipps = [float_list(h.ds, "ImagePositionPatient", 3, h.path) for h in hs]
    pss = [float_list(h.ds, "PixelSpacing", 2, h.path) for h in hs]
    sizes = [(count(h.ds, "Rows", h.path), count(h.ds, "Columns", h.path)) for h in hs]
    _check_same(folder, hs, "sizes (rows x columns)", [f"{r}x{c}" for r, c in sizes], lambda a, b: a == b)
    _check_same(folder, hs, "orientation (ImageOrientationPatient)", iops, lambda a, b: np.allclose(a, b, atol=1e-4))
    _check_same(folder, hs, "pixel spacing", pss, lambda a, b: np.allclose(a, b, atol=1e-4))
    check_spacing(hs[0].path, pss[0].tolist(), "PixelSpacing")
    frames = [count(h.ds, "NumberOfFrames", h.path, 1) for h in hs]
    if max(frames) > 1:
        raise DataError(f"{folder}: multi-frame (enhanced) images are not supported; export the series as single-frame slices")

    row_cos, col_cos = iops[0][:3], iops[0][3:]
    if abs(np.linalg.norm(row_cos) - 1) > 1e-3 or abs(np.linalg.norm(col_cos) - 1) > 1e-3 or abs(row_cos @ col_cos) > 1e-3:
        raise DataError(f"{hs[0].path}: ImageOrientationPatient {list(iops[0])} is not two orthogonal unit vectors")
    normal = np.cross(row_cos, col_cos)
    pos = np.array(ipps)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    hs = [hs[i] for i in order]
    pos, proj = pos[order], proj[order]
    row_sp, col_sp = float(pss[0][0]), float(pss[0][1])

    n = len(hs)
    if n > 1:
        d = np.diff(proj)
        dup = np.flatnonzero(d < 1e-3)
        if dup.size:
            i = int(dup[0])
            raise DataError(
                f"{folder}: {hs[i].path.name} and {hs[i + 1].path.name} are at the same position "
                f"({proj[i]:.2f} mm along the slice normal); several acquisitions mixed in one series?"
            )
        offsets = (pos - pos[0]) - np.outer(proj - proj[0], normal)
        drift = np.linalg.norm(offsets, axis=1)
        if drift.max() > 0.1 * min(row_sp, col_sp):
            k = int(np.argmax(drift))
            angle = np.degrees(np.arctan2(drift[k], abs(proj[k] - proj[0])))
            raise DataError(
                f"{folder}: slice positions do not lie along the slice normal (gantry tilt of about {angle:.1f} degrees); "
                "tilted series are not supported, resample it to an untilted grid first"
            )
        dz = float(np.median(d))
        bad = np.flatnonzero(np.abs(d - dz) > max(0.01, 0.01 * dz))
        if bad.size:
            i = int(bad[0])
            hint = "; a slice is probably missing" if d[i] > dz else ""
            raise DataError(
                f"{folder}: uneven slice spacing: gap of {d[i]:.3f} mm between {hs[i].path.name} and {hs[i + 1].path.name} "
                f"(at {proj[i]:.2f} and {proj[i + 1]:.2f} mm along the normal), expected {dz:.3f} mm{hint}"
            )
        dz = float((proj[-1] - proj[0]) / (n - 1))
    else:
        dz = single_slice_spacing(hs[0].ds, hs[0].path)

    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_sp  # column index runs along the row direction
    lps[:3, 1] = col_cos * row_sp
    lps[:3, 2] = normal * dz
    lps[:3, 3] = pos[0]
    return hs, lps


def _pixels(h: _Header) -> tuple[np.ndarray, float, float]:
    try:
        ds = pydicom.dcmread(h.path)
        px = ds.pixel_array
    except Exception as exc:
        raise DataError(f"{h.path}: pixel data cannot be decoded ({type(exc).__name__})") from None
    if px.ndim != 2:
        raise DataError(f"{h.path}: expected one grey-level image, found pixel array of shape {px.shape}")
    slope, intercept = rescale(ds, h.path)
    return px, slope, intercept


def read_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """Read one CT series as a Volume in Hounsfield units (int16 when exact, else float32)."""
    root = Path(folder)
    headers = [_Header(p, ds) for p, ds in scan_dicom_folder(root)]
    hs = _select_series(root, headers, series_uid)
    modality = str(hs[0].ds.get("Modality", "") or "")
    if modality != "CT":
        raise DataError(f"{root}: series modality is {modality or 'missing'}, expected CT")
    hs, lps = _geometry(root, hs)

    rows, cols = count(hs[0].ds, "Rows", hs[0].path), count(hs[0].ds, "Columns", hs[0].path)
    check_size(root, (cols, rows, len(hs)), 4, "Columns x Rows x slices")
    hu = np.empty((cols, rows, len(hs)), dtype=np.float32)  # exact for integer HU (|v| < 2**24)
    exact = True
    for k, h in enumerate(hs):
        px, slope, intercept = _pixels(h)
        if px.shape != (rows, cols):
            raise DataError(f"{h.path}: pixel data is {px.shape[0]}x{px.shape[1]}, header says {rows}x{cols}")
        exact &= slope.is_integer() and intercept.is_integer()
        with np.errstate(over="ignore", invalid="ignore"):  # an absurd slope overflows: refused just below
            hu[:, :, k] = px.T.astype(np.float64) * slope + intercept
        check_finite(f"{h.path} (RescaleSlope {slope:g}, RescaleIntercept {intercept:g})", hu[:, :, k])
    if exact and hu.min() >= np.iinfo(np.int16).min and hu.max() <= np.iinfo(np.int16).max:
        array = hu.astype(np.int16)
    else:
        array = hu

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


def new_dicom_dataset(sop_class_uid: str) -> Dataset:
    """An empty dataset with file meta, a new SOP Instance UID and the SOP Class set (explicit VR little endian)."""
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop
    return ds


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    modality: str = "CT",
    patient_name: str = "",
    patient_id: str = "",
    study_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "rtseg",
    rescale: tuple[float, float] = (1.0, 0.0),
) -> list[Path]:
    """Write a Volume as single-frame slices (CT Image Storage); used for demos and tests.

    Stored values are ``round((v - intercept) / slope)`` in int16. Slices are
    written along the right-handed normal of the in-plane axes, so a
    left-handed volume comes back from :func:`read_dicom_series` with axis 2 flipped.
    """
    out = Path(folder)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: folder is not empty; a DICOM series is written into a new or empty folder")
    slope, intercept = float(rescale[0]), float(rescale[1])
    if slope == 0:
        raise ValueError("rescale slope must be non-zero")
    lps = LPS_TO_RAS @ volume.affine
    arr = np.asarray(volume.array, dtype=np.float64)
    sp = volume.spacing
    row_cos, col_cos, slice_dir = (lps[:3, i] / sp[i] for i in range(3))
    if np.dot(np.cross(row_cos, col_cos), slice_dir) < 0:
        arr = arr[:, :, ::-1]
        lps = lps.copy()
        lps[:3, 3] = lps[:3, 3] + lps[:3, 2] * (arr.shape[2] - 1)
        lps[:3, 2] = -lps[:3, 2]
    stored = np.round((arr - intercept) / slope)
    info = np.iinfo(np.int16)
    if stored.min() < info.min or stored.max() > info.max:
        raise DataError(f"values do not fit int16 with rescale slope {slope} and intercept {intercept}")
    stored = stored.astype(np.int16)

    study = study_instance_uid or generate_uid()
    series = generate_uid()
    frame = frame_of_reference_uid or generate_uid()
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    paths: list[Path] = []
    for k in range(arr.shape[2]):
        ds = new_dicom_dataset(CTImageStorage)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.StudyDate, ds.StudyTime = date, time
        ds.AccessionNumber = ""
        ds.Modality = modality
        ds.Manufacturer = "rtseg"
        ds.SoftwareVersions = __version__
        ds.ReferringPhysicianName = ""
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.KVP = ""
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.StudyID = ""
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{v:.6g}" for v in lps[:3, 3] + lps[:3, 2] * k]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in np.concatenate([row_cos, col_cos])]
        ds.PixelSpacing = [f"{sp[1]:.6g}", f"{sp[0]:.6g}"]
        ds.SliceThickness = f"{sp[2]:.6g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = f"{intercept:.6g}"
        ds.RescaleSlope = f"{slope:.6g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        target = out / f"{modality}_{k:04d}.dcm"
        with atomic_path(target) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        paths.append(target)
    return paths
