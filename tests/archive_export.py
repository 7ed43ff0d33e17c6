"""A generated clinic export for the archive-conversion tests and benchmark: phantom CTs as DICOM, several
RTSTRUCTs per CT (organs split between a planning and a physician set, helpers such as PTV/PRV/ring/BODY
beside the organs), MR and RTPLAN objects, nested folders and files without extension."""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTPlanStorage, generate_uid
from scipy import ndimage

from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from rtseg.io.rtstruct import write_rtstruct
from rtseg.io.volume import Volume
from rtseg.synthetic.patient import generate_patient

ORGANS = ["prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right"]  # phantom labels 1..5
CLASSES = ["background", *ORGANS]


@dataclass
class SetSpec:
    """One structure set: organ -> (ROI name, mask source), helpers -> ROI name, and its header."""

    organs: Mapping[str, str]  # organ -> clinic ROI name
    label: str
    approval: str = "UNAPPROVED"
    date: str = "20240101"
    time: str = "120000"
    helpers: Sequence[str] = ()  # PTV70, z_ring, BODY, Rectum_PRV, Rectum_old, Bladder_PRV
    variant: Mapping[str, str] = field(default_factory=dict)  # organ -> "eroded" (a second opinion)


def phantom(seed: int, shape: Sequence[int] = (64, 64, 20), spacing: Sequence[float] = (4.0, 4.0, 8.0)) -> tuple[Volume, np.ndarray]:
    ct, lab = generate_patient(seed, shape, spacing)
    return ct, np.asarray(lab.array)


def organ_mask(labels: np.ndarray, organ: str, variant: str = "") -> np.ndarray:
    m = labels == ORGANS.index(organ) + 1
    if variant == "eroded":
        m = ndimage.binary_erosion(m, iterations=1) if ndimage.binary_erosion(m, iterations=1).any() else m
    return m


def _helper_masks(labels: np.ndarray, ct: np.ndarray, names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    out = []
    prostate, rectum, bladder = labels == 1, labels == 3, labels == 2
    for n in names:
        if n.startswith("PTV"):
            out.append((n, ndimage.binary_dilation(prostate, iterations=2)))
        elif "ring" in n:
            ptv = ndimage.binary_dilation(prostate, iterations=2)
            out.append((n, ndimage.binary_dilation(ptv, iterations=2) & ~ptv))
        elif n.upper() == "BODY":
            out.append((n, ndimage.binary_fill_holes(ct > -500)))
        elif n.startswith("Rectum_PRV"):
            out.append((n, ndimage.binary_dilation(rectum, iterations=1)))
        elif n.startswith("Bladder_PRV"):
            out.append((n, ndimage.binary_dilation(bladder, iterations=1)))
        elif n == "Rectum_old":
            out.append((n, np.roll(rectum, 1, axis=2)))
    return out


def _write_layers(layers: list[list[tuple[str, np.ndarray]]], series: Volume, path: Path) -> Dataset:
    """One RTSTRUCT whose ROIs may overlap: each layer (disjoint masks) written by rtseg's writer, then merged."""
    merged: Dataset | None = None
    number = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, layer in enumerate(layers):
            if not layer:
                continue
            arr = np.zeros(series.shape, np.uint8)
            for k, (_, m) in enumerate(layer, start=1):
                arr[m & (arr == 0)] = k
            names = [n for n, _ in layer]
            p = Path(tmp) / f"l{i}.dcm"
            write_rtstruct(arr, series, ["background", *[f"c{k}" for k in range(len(names))]],
                           [(255, 0, 0)] * len(names), p, names=names)
            ds = pydicom.dcmread(p)
            for seq in (ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence):
                for item in seq:
                    key = "ROINumber" if "ROINumber" in item else "ReferencedROINumber"
                    setattr(item, key, int(getattr(item, key)) + number)
                    if "ObservationNumber" in item:
                        item.ObservationNumber = int(item.ObservationNumber) + number
            number += len(names)
            if merged is None:
                merged = ds
            else:
                merged.StructureSetROISequence.extend(ds.StructureSetROISequence)
                merged.ROIContourSequence.extend(ds.ROIContourSequence)
                merged.RTROIObservationsSequence.extend(ds.RTROIObservationsSequence)
    assert merged is not None
    return merged


def write_structure_set(spec: SetSpec, labels: np.ndarray, ct: np.ndarray, series: Volume, path: Path) -> None:
    organs = [(name, organ_mask(labels, organ, spec.variant.get(organ, ""))) for organ, name in spec.organs.items()]
    helpers = _helper_masks(labels, ct, spec.helpers)
    ds = _write_layers([organs] + [[h] for h in helpers], series, path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = spec.label[:16], spec.date, spec.time
    ds.ApprovalStatus = spec.approval
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_rtplan(path: Path, series: Volume) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = RTPlanStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RTPlanStorage, meta.MediaStorageSOPInstanceUID, "RTPLAN"
    ds.PatientID, ds.StudyInstanceUID = "PID-X", series.meta["dicom"]["study_instance_uid"]
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), series.meta["dicom"]["frame_of_reference_uid"]
    ds.RTPlanLabel = "plan"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def write_ct(ct: Volume, folder: Path, patient: str, *, no_extension: bool = False) -> Volume:
    study, frame = generate_uid(), generate_uid()
    write_dicom_series(ct, folder, patient_name=f"Doe^{patient}", patient_id=f"PID-{patient}",
                       study_instance_uid=study, frame_of_reference_uid=frame)
    if no_extension:
        for p in folder.glob("*.dcm"):
            p.rename(p.with_suffix(""))
    return read_dicom_series(folder)


def other_scan(ct: Volume, patient: str) -> Volume:
    """A CT series of the same patient that is not in the export (the wrong-scan RTSTRUCT is drawn on it)."""
    tmp = Path(tempfile.mkdtemp())
    return write_ct(ct, tmp / "other", patient)


def standard_sets(planning_newer: bool = True, planning_approved: bool = False) -> list[SetSpec]:
    """The dosimetrist's planning set (bladder, rectum, helpers) and the physician's organ set (prostate,
    femoral heads, a second bladder drawn smaller): which bladder wins depends on approval and dates."""
    plan = SetSpec({"bladder": "Bladder", "rectum": "Rectum"}, "Planning", "APPROVED" if planning_approved else "UNAPPROVED",
                   "20240110" if planning_newer else "20240102", "101500",
                   helpers=("PTV70", "z_ring", "BODY", "Rectum_PRV", "Bladder_PRV"))
    md = SetSpec({"prostate": "Prostate", "bladder": "Urinary Bladder", "femoral_head_left": "Fem Head L",
                  "femoral_head_right": "Femoral head right"}, "Physician", "UNAPPROVED", "20240105", "083000",
                 helpers=("Rectum_old",), variant={"bladder": "eroded"})
    return [plan, md]


def copy_volume(v: Volume) -> Volume:
    return Volume(v.array.copy(), v.affine.copy(), copy.deepcopy({k: x for k, x in v.meta.items() if k != "dicom"}))
