"""Writing DICOM: an empty dataset with file meta for derived objects, and CT series for demos and tests.

``write_dicom_series`` makes the CT series the RTSTRUCT/SEG tests, the demo and
the benchmarks read back; a clinical CT always comes from the scanner.
"""
from __future__ import annotations

import copy
import datetime as _dt
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

from rtseg import __version__
from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.dicom.geometry import LPS_TO_RAS
from rtseg.io.volume import Volume


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


def _right_handed(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(values, LPS affine) with slices along the right-handed normal of the in-plane axes."""
    lps = LPS_TO_RAS @ volume.affine
    arr = np.asarray(volume.array, dtype=np.float64)
    sp = volume.spacing
    row_cos, col_cos, slice_dir = (lps[:3, i] / sp[i] for i in range(3))
    if np.dot(np.cross(row_cos, col_cos), slice_dir) < 0:
        arr = arr[:, :, ::-1]
        lps = lps.copy()
        lps[:3, 3] = lps[:3, 3] + lps[:3, 2] * (arr.shape[2] - 1)
        lps[:3, 2] = -lps[:3, 2]
    return arr, lps


def _stored_int16(arr: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    stored = np.round((arr - intercept) / slope)
    info = np.iinfo(np.int16)
    if stored.min() < info.min or stored.max() > info.max:
        raise DataError(f"values do not fit int16 with rescale slope {slope} and intercept {intercept}")
    return stored.astype(np.int16)


def _series_dataset(modality: str, patient_name: str, patient_id: str, uids: tuple[str, str, str], description: str) -> Dataset:
    """The attributes every slice of the series shares (patient, study, series, equipment)."""
    ds = new_dicom_dataset(CTImageStorage)
    now = _dt.datetime.now()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.Modality = modality
    ds.Manufacturer = "rtseg"
    ds.SoftwareVersions = __version__
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.KVP = ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = uids
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
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
    arr, lps = _right_handed(volume)
    stored = _stored_int16(arr, slope, intercept)
    sp = volume.spacing
    row_cos, col_cos = lps[:3, 0] / sp[0], lps[:3, 1] / sp[1]
    uids = (study_instance_uid or generate_uid(), generate_uid(), frame_of_reference_uid or generate_uid())
    series = _series_dataset(modality, patient_name, patient_id, uids, series_description)
    paths: list[Path] = []
    for k in range(arr.shape[2]):
        ds = copy.deepcopy(series)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.6g}" for v in lps[:3, 3] + lps[:3, 2] * k]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in np.concatenate([row_cos, col_cos])]
        ds.PixelSpacing = [f"{sp[1]:.6g}", f"{sp[0]:.6g}"]
        ds.SliceThickness = f"{sp[2]:.6g}"
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[0])
        ds.RescaleIntercept = f"{intercept:.6g}"
        ds.RescaleSlope = f"{slope:.6g}"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        target = out / f"{modality}_{k:04d}.dcm"
        with atomic_path(target) as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        paths.append(target)
    return paths
