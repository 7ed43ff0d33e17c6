"""Label volume -> DICOM RT Structure Set, built with pydicom.

Contours come from scikit-image's marching squares at level 0.5 on each
slice: outer boundaries and hole boundaries are separate closed polygons, and
every RTSTRUCT reader XORs the contours of a slice, so holes survive. The
polygons run halfway between inside and outside voxel centres, so filling
them again (centre-inside rule) gives back the same voxels.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import RTStructureSetStorage, generate_uid
from skimage.measure import approximate_polygon, find_contours

from rtseg import __version__
from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.dicom_series import LPS_TO_RAS, new_dicom_dataset
from rtseg.io.volume import Volume

log = logging.getLogger(__name__)

STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # what RT Referenced Study Sequence items conventionally cite
POLYGON_TOLERANCE = 0.1  # voxels: drop only (nearly) collinear points


def align_to_grid(labels: Volume, target: Volume, atol: float = 1e-2) -> np.ndarray:
    """``labels``' array in ``target``'s array order, when both are the same grid up to axis permutation/flips.

    Anything else (other spacing, shift, rotation) would need resampling and is
    refused: contours must land on the voxels the labels were predicted on.
    """
    m = np.linalg.inv(target.affine) @ labels.affine
    rot = np.round(m[:3, :3])
    ok = (
        np.allclose(m[:3, :3], rot, atol=atol)
        and np.all(np.abs(rot).sum(axis=0) == 1)
        and np.all(np.abs(rot).sum(axis=1) == 1)
        and np.allclose(m[:3, 3], np.round(m[:3, 3]), atol=atol)
    )
    if ok:
        # target axis a receives labels axis src[a], flipped when the sign is negative
        src = [int(np.flatnonzero(rot[a])[0]) for a in range(3)]
        arr = np.transpose(labels.array, src)
        offset = np.round(m[:3, 3]).astype(int)
        for a in range(3):
            if rot[a, src[a]] < 0:
                arr = np.flip(arr, axis=a)
                ok &= offset[a] == arr.shape[a] - 1
            else:
                ok &= offset[a] == 0
        if ok and arr.shape == target.shape:
            return np.ascontiguousarray(arr)
    raise DataError(
        f"label volume (shape {labels.shape}, spacing {tuple(round(s, 3) for s in labels.spacing)}, origin "
        f"{tuple(round(o, 2) for o in labels.origin)}) is not on the CT grid (shape {target.shape}, spacing "
        f"{tuple(round(s, 3) for s in target.spacing)}, origin {tuple(round(o, 2) for o in target.origin)}); "
        "resample the labels to the CT first"
    )


def slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed polygons (M, 2) in (axis0, axis1) voxel coordinates around a 2D mask, holes included."""
    padded = np.pad(mask2d.astype(np.float32), 1)
    out = []
    for c in find_contours(padded, 0.5):
        c = approximate_polygon(c, POLYGON_TOLERANCE) - 1.0
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:
            out.append(c)
    return out


def _dicom_meta(series: Volume) -> dict:
    dicom = series.meta.get("dicom")
    src = series.meta.get("source", "CT series")
    if not dicom:
        raise DataError(
            f"{src}: the CT volume carries no DICOM UIDs; read it with read_dicom_series to write an RTSTRUCT against it"
        )
    sops = list(dicom.get("sop_instance_uids", []))
    if len(sops) != series.shape[2]:
        raise DataError(
            f"{src}: {len(sops)} SOP Instance UIDs for {series.shape[2]} slices; DICOM metadata does not match the volume"
        )
    missing = sum(1 for s in sops if not s)
    if missing:
        raise DataError(
            f"{src}: {missing} of {len(sops)} CT slices have no SOP Instance UID (over-anonymised series?); "
            "an RTSTRUCT must reference every slice, so none was written"
        )
    for key, what in (("study_instance_uid", "Study Instance UID"), ("series_instance_uid", "Series Instance UID"),
                      ("frame_of_reference_uid", "Frame of Reference UID")):
        if not dicom.get(key):
            raise DataError(f"{src}: the CT series has no {what}; an RTSTRUCT must reference it, so none was written")
    if any(not c for c in dicom.get("sop_class_uids", [])):
        raise DataError(f"{src}: some CT slices have no SOP Class UID; an RTSTRUCT must reference it, so none was written")
    return dicom


def _item(**kw: object) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def write_rtstruct(
    labels: np.ndarray | Volume,
    series: Volume,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    structure_set_label: str = "rtseg",
) -> Path:
    """Write one ROI per non-empty class (label value = ROI number) as an RTSTRUCT against ``series``.

    ``class_names[0]`` is background; ``colors`` and ``names`` give one entry
    per organ class (labels 1..N-1), like the config's COLOR_MAP. ROIs are
    marked AUTOMATIC and the structure set UNAPPROVED: a person must review them.
    """
    dicom = _dicom_meta(series)
    src = series.meta.get("source", "CT series")
    arr = align_to_grid(labels, series) if isinstance(labels, Volume) else np.asarray(labels)
    if arr.shape != series.shape:
        raise DataError(f"label array shape {arr.shape} does not match the CT series shape {series.shape}")
    n_org = len(class_names) - 1
    if n_org < 1:
        raise DataError(f"need background plus at least one class, got {list(class_names)}")
    if len(colors) != n_org:
        raise DataError(f"{len(colors)} colours given for {n_org} organ classes {list(class_names[1:])}")
    roi_names = list(names) if names is not None else list(class_names[1:])
    if len(roi_names) != n_org:
        raise DataError(f"{len(roi_names)} ROI names given for {n_org} organ classes {list(class_names[1:])}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise DataError("label array holds non-integer values; expected class indices")
        arr = arr.astype(np.int64)
    present = np.unique(arr)
    bad = [int(v) for v in present if v < 0 or v > n_org]
    if bad:
        raise DataError(f"label values {bad[:10]} found; expected 0..{n_org} for classes {list(class_names)}")

    lps = LPS_TO_RAS @ series.affine
    sops, classes = dicom["sop_instance_uids"], dicom["sop_class_uids"]
    frame = dicom["frame_of_reference_uid"]
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    ss_rois, roi_contours, observations = [], [], []
    for c in range(1, n_org + 1):
        if c not in present:
            continue
        contours = []
        for k in np.flatnonzero((arr == c).any(axis=(0, 1))):
            for poly in slice_contours(arr[:, :, k] == c):
                vox = np.column_stack([poly, np.full(len(poly), float(k)), np.ones(len(poly))])
                pts = (vox @ lps.T)[:, :3]
                image_ref = _item(ReferencedSOPClassUID=classes[k], ReferencedSOPInstanceUID=sops[k])
                contours.append(_item(
                    ContourImageSequence=DicomSequence([image_ref]),
                    ContourGeometricType="CLOSED_PLANAR",
                    NumberOfContourPoints=len(pts),
                    ContourNumber=len(contours) + 1,
                    ContourData=[f"{v:.3f}" for v in pts.ravel()],
                ))
        name = roi_names[c - 1]
        ss_rois.append(_item(ROINumber=c, ReferencedFrameOfReferenceUID=frame, ROIName=name,
                             ROIGenerationAlgorithm="AUTOMATIC", ROIGenerationDescription=f"rtseg {__version__}"))
        roi_contours.append(_item(ROIDisplayColor=[int(v) for v in colors[c - 1]], ContourSequence=DicomSequence(contours),
                                  ReferencedROINumber=c))
        observations.append(_item(ObservationNumber=c, ReferencedROINumber=c, ROIObservationLabel=name[:16],
                                  RTROIInterpretedType="ORGAN", ROIInterpreter=""))
    if not ss_rois:
        log.warning("%s: label volume is empty; the RTSTRUCT holds no ROI", src)

    ds = new_dicom_dataset(RTStructureSetStorage)
    for kw, value in (dicom.get("patient_study") or {}).items():
        setattr(ds, kw, value)
    if "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.StudyInstanceUID = dicom["study_instance_uid"]
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        if kw not in ds:
            setattr(ds, kw, "")  # type 2: present, possibly empty
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1000  # any number; type 2, but media (DICOMDIR) builders want one
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = "rtseg automatic contours"
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = frame
    ds.PositionReferenceIndicator = dicom.get("position_reference_indicator", "") or ""
    ds.Manufacturer = "rtseg"
    ds.ManufacturerModelName = "rtseg"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.StructureSetLabel = structure_set_label[:16]
    ds.StructureSetName = structure_set_label[:64]
    ds.StructureSetDate, ds.StructureSetTime = date, time
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_item(
        FrameOfReferenceUID=frame,
        RTReferencedStudySequence=DicomSequence([_item(
            ReferencedSOPClassUID=STUDY_COMPONENT_SOP_CLASS,
            ReferencedSOPInstanceUID=dicom["study_instance_uid"],
            RTReferencedSeriesSequence=DicomSequence([_item(
                SeriesInstanceUID=dicom["series_instance_uid"],
                ContourImageSequence=DicomSequence([
                    _item(ReferencedSOPClassUID=cl, ReferencedSOPInstanceUID=s) for cl, s in zip(classes, sops)
                ]),
            )]),
        )]),
    )])
    ds.StructureSetROISequence = DicomSequence(ss_rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    ds.ApprovalStatus = "UNAPPROVED"

    target = Path(path)
    with atomic_path(target) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return target
