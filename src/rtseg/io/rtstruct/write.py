"""Label volume -> DICOM RT Structure Set.

Contours come from :mod:`rtseg.io.rtstruct.contours` (marching squares, holes as
keyhole cuts or separate inner contours, vectorised Douglas-Peucker with a
tolerance in mm that keeps every voxel on its side). The hot part, the ROI
Contour Sequence, is encoded here directly as Implicit VR Little Endian bytes:
coordinates are formatted once as DS strings of at most 16 bytes and never
parsed or validated again; everything else goes through pydicom. Implicit VR
because a long contour's ContourData can exceed the 64 KiB that an explicit-VR
DS length field allows.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import struct
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian, RTStructureSetStorage, generate_uid
from scipy import ndimage

from rtseg import __version__
from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.rtstruct.contours import DEFAULT_HOLE_ENCODING, DEFAULT_TOLERANCE_MM, HOLE_ENCODINGS, effective_tolerance, \
    encode_slice, simplify_polygons
from rtseg.io.dicom.geometry import LPS_TO_RAS
from rtseg.io.dicom.references import contour_image_refs, series_image_refs
from rtseg.io.dicom.validate import check_series_extent, check_written
from rtseg.io.dicom.write import new_dicom_dataset
from rtseg.io.fingerprint import ModelIdentity
from rtseg.io.rtstruct.roi_names import check_roi_names, roi_names_for
from rtseg.io.volume import Volume

log = logging.getLogger(__name__)

STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # what RT Referenced Study Sequence items conventionally cite
DS_DECIMALS = 3  # 0.001 mm; "-12345678.123" is 13 bytes, inside the 16 a DS allows
ROI_CONTOUR_SEQUENCE = Tag(0x3006, 0x0039)


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


def referenced_series(series: Volume) -> dict:
    """The CT's DICOM references (UIDs per slice, patient/study), refused when a derived object could not cite them."""
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


def _el(group: int, element: int, value: bytes, pad: bytes = b" ") -> bytes:
    """One Implicit VR Little Endian element (value padded to even length)."""
    if len(value) % 2:
        value += pad
    return struct.pack("<HHI", group, element, len(value)) + value


def _items(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<HHI", 0xFFFE, 0xE000, len(i)) + i for i in items)


def _sq(group: int, element: int, items: Sequence[bytes]) -> bytes:
    return _el(group, element, _items(items))


def format_ds(values: np.ndarray) -> bytes:
    """Backslash-joined DS strings, each at most 16 bytes (refused, not truncated, beyond that)."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    if flat.size and (not np.all(np.isfinite(flat)) or np.abs(flat).max() >= 1e11):
        raise DataError(f"contour coordinates out of range (largest {np.abs(flat).max():.4g} mm); check the CT geometry")
    text = ("\\".join([f"%.{DS_DECIMALS}f"] * flat.size)) % tuple(flat.tolist())
    return text.encode("ascii")


def _roi_polygons(sub: np.ndarray, origin: tuple[int, int, int], holes: str, tolerance: float,
                  spacing: tuple[float, float]) -> list[tuple[int, np.ndarray]]:
    """(slice index, polygon in voxel coordinates) for one organ's mask cropped at ``origin``, simplified together."""
    offset = np.array(origin[:2], dtype=np.float64)
    ks, polys, pins = [], [], []
    for k in np.flatnonzero(sub.any(axis=(0, 1))):
        for poly, pinned in encode_slice(sub[:, :, k], holes):
            ks.append(origin[2] + int(k))
            polys.append(poly + offset)
            pins.append(pinned)
    simple = simplify_polygons(polys, tolerance, pins, scale=spacing)
    return list(zip(ks, simple))


def _contour_sequence(polys: list[tuple[int, np.ndarray]], lps: np.ndarray, image_refs: list[bytes]) -> bytes:
    """ContourSequence items of one ROI: CLOSED_PLANAR polygons in patient coordinates (LPS mm)."""
    if not polys:
        return b""
    sizes = [len(p) for _, p in polys]
    vox = np.concatenate([np.column_stack([p, np.full(len(p), float(k))]) for k, p in polys])
    pts = vox @ lps[:3, :3].T + lps[:3, 3]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    items = []
    for n, ((k, _), a, b) in enumerate(zip(polys, bounds[:-1], bounds[1:]), start=1):
        items.append(
            image_refs[k]
            + _el(0x3006, 0x0042, b"CLOSED_PLANAR")
            + _el(0x3006, 0x0046, str(int(b - a)).encode())
            + _el(0x3006, 0x0048, str(n).encode())
            + _el(0x3006, 0x0050, format_ds(pts[a:b]))
        )
    return _items(items)


def _labels_array(labels: np.ndarray | Volume, series: Volume, class_names: Sequence[str],
                  colors: Sequence[tuple[int, int, int]], roi_names: Sequence[str]) -> np.ndarray:
    """The label array on the CT grid, checked against the class list."""
    arr = align_to_grid(labels, series) if isinstance(labels, Volume) else np.asarray(labels)
    if arr.shape != series.shape:
        raise DataError(f"label array shape {arr.shape} does not match the CT series shape {series.shape}")
    n_org = len(class_names) - 1
    if n_org < 1:
        raise DataError(f"need background plus at least one class, got {list(class_names)}")
    if len(colors) != n_org:
        raise DataError(f"{len(colors)} colours given for {n_org} organ classes {list(class_names[1:])}")
    if len(roi_names) != n_org:
        raise DataError(f"{len(roi_names)} ROI names given for {n_org} organ classes {list(class_names[1:])}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.array_equal(arr, np.round(arr)):
            raise DataError("label array holds non-integer values; expected class indices")
        arr = arr.astype(np.int64)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi > n_org:
        bad = [int(v) for v in np.unique(arr) if v < 0 or v > n_org]
        raise DataError(f"label values {bad[:10]} found; expected 0..{n_org} for classes {list(class_names)}")
    return arr


def write_rtstruct(
    labels: np.ndarray | Volume,
    series: Volume,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    structure_set_label: str = "rtseg",
    holes: str = DEFAULT_HOLE_ENCODING,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    model: Optional[ModelIdentity] = None,
    description: str = "",
    roi_descriptions: Optional[Mapping[str, str]] = None,
) -> Path:
    """Write one ROI per non-empty class (ROI number = label value) as an RTSTRUCT against ``series``.

    ``class_names[0]`` is background; ``colors`` and ``names`` give one entry
    per organ class (labels 1..N-1), like the config's COLOR_MAP; ``names``
    defaults to TG-263 names (:func:`rtseg.io.rtstruct.roi_names.roi_names_for`). Holes
    are encoded as ``holes`` says (``keyhole`` or ``xor``). ROIs are marked
    AUTOMATIC and the structure set UNAPPROVED: a person must review them. ``model`` names the checkpoint in
    each ROI's ROIGenerationDescription; ``description`` is the StructureSetDescription (the case's QA flags),
    ``roi_descriptions`` each organ's ROIObservationDescription (its flags), by class name.

    A label volume with no organ, a series thinner than 3 slices, or a dataset that fails
    :func:`rtseg.io.dicom.validate.rtstruct_problems` raises ``DataError`` and writes nothing.
    """
    if holes not in HOLE_ENCODINGS:
        raise DataError(f"hole encoding {holes!r}: expected one of {', '.join(HOLE_ENCODINGS)}")
    source = series.meta.get("source", "CT series")
    check_series_extent(series.shape, source)
    dicom = referenced_series(series)
    roi_names = check_roi_names(names) if names is not None else roi_names_for(class_names[1:])
    arr = _labels_array(labels, series, class_names, colors, roi_names)
    lps = LPS_TO_RAS @ series.affine
    spacing = (series.spacing[0], series.spacing[1])
    tolerance = effective_tolerance(tolerance_mm, spacing)
    image_refs = [_sq(0x3006, 0x0016, [_el(0x0008, 0x1150, cl.encode(), b"\0") + _el(0x0008, 0x1155, s.encode(), b"\0")
                                       + (b"" if f is None else _el(0x0008, 0x1160, str(f).encode()))])
                  for cl, s, f in contour_image_refs(dicom)]  # a frame of a multi-frame CT: its Referenced Frame Number
    frame = dicom["frame_of_reference_uid"]
    boxes = ndimage.find_objects(arr, max_label=len(class_names) - 1)
    if all(box is None for box in boxes):
        raise DataError(f"{source}: the prediction holds no organ (every voxel is background); an empty RTSTRUCT is "
                        "not valid DICOM, so none was written")
    generation = model.text(64, f"rtseg {__version__} ") if model is not None else f"rtseg {__version__}"
    notes = roi_descriptions or {}
    ss_rois, roi_items, observations = [], [], []
    for c, box in enumerate(boxes, start=1):
        if box is None:
            continue
        polys = _roi_polygons(arr[box] == c, tuple(b.start for b in box), holes, tolerance, spacing)
        name = roi_names[c - 1]
        ss_rois.append(_item(ROINumber=c, ReferencedFrameOfReferenceUID=frame, ROIName=name,
                             ROIGenerationAlgorithm="AUTOMATIC", ROIGenerationDescription=generation))
        color = "\\".join(str(int(v)) for v in colors[c - 1]).encode()
        roi_items.append(_el(0x3006, 0x002A, color) + _el(0x3006, 0x0040, _contour_sequence(polys, lps, image_refs))
                         + _el(0x3006, 0x0084, str(c).encode()))
        observations.append(_item(ObservationNumber=c, ReferencedROINumber=c, ROIObservationLabel=name[:16],
                                  RTROIInterpretedType="ORGAN", ROIInterpreter=""))
        if notes.get(class_names[c]):
            observations[-1].ROIObservationDescription = short_text(notes[class_names[c]])
    ds = _structure_set(dicom, structure_set_label)
    if description:
        ds.StructureSetDescription = short_text(description)
    ds.StructureSetROISequence = DicomSequence(ss_rois)
    value = _items(roi_items)
    ds[ROI_CONTOUR_SEQUENCE] = RawDataElement(ROI_CONTOUR_SEQUENCE, "SQ", len(value), value, 0, True, True)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    ds.ApprovalStatus = "UNAPPROVED"
    # the raw sequence is already Implicit VR Little Endian: tell pydicom not to re-encode the dataset
    ds.set_original_encoding(True, True, convert_encodings(ds.SpecificCharacterSet))
    target = Path(path)
    with atomic_path(target) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        check_written(tmp, "RTSTRUCT", target)
    return target


def short_text(text: str, limit: int = 1024) -> str:
    """A DICOM ST value: at most ``limit`` characters (an ellipsis says it was cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _structure_set(dicom: dict, structure_set_label: str) -> Dataset:
    """The RTSTRUCT dataset without its ROI sequences: patient/study copied from the CT, references to it."""
    frame = dicom["frame_of_reference_uid"]
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = new_dicom_dataset(RTStructureSetStorage)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
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
                    _item(ReferencedSOPClassUID=cl, ReferencedSOPInstanceUID=s) for cl, s in series_image_refs(dicom)
                ]),
            )]),
        )]),
    )])
    return ds
