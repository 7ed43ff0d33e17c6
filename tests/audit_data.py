"""Simulated audit studies (phantoms; simulated data): CT series as DICOM, the auto RTSTRUCT (rtseg's writer) and
an approved RTSTRUCT made independently with pydicom from the auto one, with edits of known size on known organs:
an organ's contour points shifted by whole voxels, an ROI renamed, an organ deleted."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pydicom
from pydicom.uid import generate_uid

import torch

from archive_export import CLASSES, phantom, write_ct
from predict_helpers import COLORS, NAMES, WINDOW
from predict_helpers import phantom as small_phantom
from rtseg.data.preprocess import Preprocessing
from rtseg.inference.bundle import InferenceBundle, save_bundle
from rtseg.io.rtstruct import write_rtstruct
from rtseg.io.volume import Volume
from rtseg.models.spec import build_model, model_spec

MODEL = "0123456789ab"


def write_auto(labels: np.ndarray, series: Volume, path: Path, model: str = MODEL, classes=CLASSES) -> Path:
    write_rtstruct(labels, series, classes, [(255, 0, 0)] * (len(classes) - 1), path)
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = f"rtseg automatic contours, model {model}"
    ds.save_as(path, enforce_file_format=True)
    return path


def edit_set(auto: Path, out: Path, *, shift_mm: Mapping[str, float] = (), rename: Mapping[str, str] = (),
             delete: Sequence[str] = (), date: str = "20250101", approval: str = "APPROVED") -> Path:
    """The physician's version of ``auto``: ROIs (by name) shifted along the patient x axis by ``shift_mm``,
    renamed, deleted; a new SOP Instance and series, approved on ``date``."""
    ds = pydicom.dcmread(auto)
    shift_mm, rename = dict(shift_mm), dict(rename)
    number = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    for rc in ds.ROIContourSequence:
        name = number[int(rc.ReferencedROINumber)]
        for c in rc.get("ContourSequence", []):
            if name in shift_mm:
                pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
                pts[:, 0] += shift_mm[name]
                c.ContourData = [f"{v:.4f}" for v in pts.reshape(-1)]
    gone = {n for n, v in number.items() if v in delete}
    for seq in ("StructureSetROISequence", "ROIContourSequence", "RTROIObservationsSequence"):
        key = "ROINumber" if seq == "StructureSetROISequence" else "ReferencedROINumber"
        setattr(ds, seq, [copy.deepcopy(i) for i in getattr(ds, seq) if int(getattr(i, key)) not in gone])
    for r in ds.StructureSetROISequence:
        r.ROIName = rename.get(str(r.ROIName), str(r.ROIName))
        r.ROIGenerationAlgorithm = "MANUAL"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesDescription, ds.StructureSetLabel = "approved", "Approved"
    ds.ApprovalStatus, ds.StructureSetDate, ds.StructureSetTime = approval, date, "100000"
    if approval == "APPROVED":
        ds.ReviewDate, ds.ReviewTime, ds.ReviewerName = date, "100000", "Dr^Audit"
    ds.Manufacturer = "TPS"
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def make_case(root: Path, name: str, seed: int, shape=(48, 48, 12), spacing=(4.0, 4.0, 6.0)) -> tuple[Volume, np.ndarray, Path]:
    """CT series under ``root/auto/<name>/ct`` and its auto set beside it (``rtstruct.dcm``)."""
    ct, labels = phantom(seed, shape, spacing)
    series = write_ct(ct, root / "auto" / name / "ct", name)
    auto = write_auto(labels, series, root / "auto" / name / "rtstruct.dcm")
    return series, labels, auto


def two_organ_checkpoint(path: Path, seed: int = 1, width: int = 8) -> Path:
    """An untrained network (fixed seed) whose 1x1x1 head is fitted by class-balanced least squares on a phantom
    (no gradient training), at the input's own spacing: it draws both organs of ``NAMES`` (body -> prostate,
    bone -> bladder) roughly, which is all the audit needs: an output with two organs for a physician to edit."""
    torch.manual_seed(seed)
    spec = model_spec("ResUnet_3D", 1, len(NAMES), width, 0.0)
    model = build_model(spec).eval()
    hu = small_phantom(shape=(40, 32, 32))
    target = np.where(hu < -500, 0, np.where(hu > 200, 2, 1)).ravel()
    with torch.no_grad():
        f = model.features(torch.from_numpy(WINDOW(hu))[None, None])[0]
        feats = f.reshape(f.shape[0], -1).T.double().numpy()
        design = np.c_[feats, np.ones(len(feats))]
        wt = np.sqrt(1.0 / np.bincount(target)[target])[:, None]
        w = np.linalg.lstsq(design * wt, np.eye(len(NAMES))[target] * wt, rcond=None)[0]
        model.head.weight.copy_(torch.from_numpy(w[:-1].T).float()[:, :, None, None, None])
        model.head.bias.copy_(torch.from_numpy(w[-1]).float())
    save_bundle(path, InferenceBundle(spec, tuple(NAMES), tuple(COLORS), Preprocessing(WINDOW, None), (16, 16, 16)),
                model.state_dict())
    return path


def small_series(folder: Path, seed: int, spacing=(2.0, 2.0, 2.0)) -> Volume:
    """A small phantom CT series (simulated) the two-organ checkpoint contours in well under a second."""
    return write_ct(Volume(small_phantom(shape=(40, 32, 32), seed=seed), np.diag([*spacing, 1.0])), folder, folder.name)


def truth_labels(series: Volume) -> np.ndarray:
    """What the physicians of the phantom clinic approve: body -> prostate (1), bone -> bladder (2)."""
    hu = np.asarray(series.array)
    return np.where(hu < -500, 0, np.where(hu > 200, 2, 1)).astype(np.uint8)


def approved_truth(series: Volume, path: Path, date: str) -> Path:
    """An approved set holding :func:`truth_labels` (rtseg's writer, then approved with pydicom)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_rtstruct(truth_labels(series), series, NAMES, COLORS, path)
    ds = pydicom.dcmread(path)
    ds.ApprovalStatus, ds.StructureSetDate, ds.StructureSetTime, ds.StructureSetLabel = "APPROVED", date, "090000", "Approved"
    ds.ReviewDate, ds.ReviewTime, ds.ReviewerName = date, "090000", "Dr^Audit"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path
