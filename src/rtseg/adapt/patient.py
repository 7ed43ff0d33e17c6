"""PATIENT_DIR: everything ``rtseg adapt`` keeps about one patient, and the checks before it is used.

Layout (docs/ADAPT.md)::

    PATIENT_DIR/patient.json          format, class list, contoured classes, hashed patient ID, planning UIDs,
                                      population model (file name, sha256), patient model facts, fractions added
    PATIENT_DIR/plan_ct.nii.gz        the planning CT
    PATIENT_DIR/plan_labels.nii.gz    its approved contours as labels (classes the plan does not contour: 0, unknown)
    PATIENT_DIR/population.pt         a copy of the population model (its sha256 is in patient.json)
    PATIENT_DIR/patient_model.pt      the patient model (``adapt prepare``; refreshed by ``adapt update``)
    PATIENT_DIR/fractions/NNN_ct.nii.gz, NNN_labels.nii.gz   approved fractions (``adapt update``)

No name or patient ID is stored or logged in clear: the patient is known by ``hash_patient_id``.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from rtseg.io.fingerprint import file_sha256
from rtseg.errors import ConfigError, DataError
from rtseg.io.jsonfile import read_json, write_json
from rtseg.io.nifti import is_nifti, read_nifti, write_nifti
from rtseg.io.volume import Volume

log = logging.getLogger("rtseg")

FORMAT = 1
MANIFEST, PLAN_CT, PLAN_LABELS = "patient.json", "plan_ct.nii.gz", "plan_labels.nii.gz"
POPULATION, PATIENT_MODEL, FRACTIONS = "population.pt", "patient_model.pt", "fractions"
HASH_SALT = "rtseg-adapt-patient:"


def hash_patient_id(patient_id: str) -> str:
    """The only form in which a patient ID is kept (32 hex characters of a salted sha256)."""
    return hashlib.sha256((HASH_SALT + str(patient_id).strip()).encode()).hexdigest()[:32]


def volume_patient_hash(volume: Volume) -> Optional[str]:
    """The hashed PatientID of a DICOM-read volume, None for NIfTI (no ID to hash)."""
    ps = (volume.meta.get("dicom") or {}).get("patient_study")
    if ps is None or "PatientID" not in ps or not str(ps["PatientID"] or "").strip():
        return None
    return hash_patient_id(str(ps["PatientID"]))


def read_ct(path: str | Path) -> Volume:
    """A CT from a NIfTI file or a DICOM series folder."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: CT not found")
    if p.is_file():
        if not is_nifti(p):
            raise DataError(f"{p}: expected a NIfTI CT (.nii, .nii.gz) or a DICOM series folder")
        return read_nifti(p)
    from rtseg.io.dicom.series import read_dicom_series

    return read_dicom_series(p)


def read_contours(path: str | Path, ct: Volume, class_names: Sequence[str]) -> Volume:
    """Approved contours on ``ct``'s grid: an RTSTRUCT (must share the CT's Frame of Reference) or a NIfTI label
    file (must have the CT's grid: the same shape and affine; anything else was drawn on another scan)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: contours not found (expected an RTSTRUCT .dcm or a NIfTI label file)")
    if is_nifti(p):
        lab = read_nifti(p)
        if lab.shape != ct.shape or not np.allclose(lab.affine, ct.affine, atol=1e-3):
            raise DataError(f"{p}: label grid (shape {list(lab.shape)}, origin {np.round(lab.affine[:3, 3], 2).tolist()}) "
                            f"is not the CT's (shape {list(ct.shape)}, origin {np.round(ct.affine[:3, 3], 2).tolist()}); "
                            "the contours belong to another scan or frame of reference")
        arr = np.asarray(lab.array)
        if arr.min() < 0 or arr.max() >= len(class_names) or not np.allclose(arr, np.rint(arr)):
            raise DataError(f"{p}: label values {arr.min()}..{arr.max()}, expected integers 0..{len(class_names) - 1}")
        return Volume(arr.astype(np.uint8), ct.affine.copy(), {})
    from rtseg.io.rtstruct import rtstruct_to_labels

    if not (ct.meta.get("dicom") or {}).get("frame_of_reference_uid"):
        raise DataError(f"{p}: an RTSTRUCT needs the planning CT as a DICOM series (to check its Frame of Reference)")
    labels, report = rtstruct_to_labels(p, ct, class_names)
    log.info("planning contours: %d ROI(s) mapped, %d not used", len(report.mapped), len(report.unmapped))
    return Volume(labels.array.astype(np.uint8), ct.affine.copy(), {})


def planning_provenance(ct: Volume) -> dict[str, Any]:
    """Planning UIDs (study, series, frame of reference) and the hashed patient ID; never the ID itself."""
    dicom = ct.meta.get("dicom") or {}
    return {
        "patient_hash": volume_patient_hash(ct),
        "study_instance_uid": str(dicom.get("study_instance_uid", "") or ""),
        "series_instance_uid": str(dicom.get("series_instance_uid", "") or ""),
        "frame_of_reference_uid": str(dicom.get("frame_of_reference_uid", "") or ""),
        "source": "dicom" if dicom else "nifti",
    }


@dataclass
class PatientDir:
    """An opened, checked PATIENT_DIR."""

    root: Path
    manifest: dict[str, Any]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.manifest["class_names"])

    @property
    def contoured(self) -> set[int]:
        """Classes the plan contours (the others are unknown, never background-verified)."""
        return {int(c) for c in self.manifest["contoured"]}

    @property
    def patient_hash(self) -> Optional[str]:
        return self.manifest["planning"].get("patient_hash")

    @property
    def population_sha256(self) -> str:
        return str(self.manifest["population"]["sha256"])

    def path(self, name: str) -> Path:
        return self.root / name

    def plan_ct(self) -> Volume:
        return read_nifti(self.path(PLAN_CT))

    def plan_labels(self) -> Volume:
        return read_nifti(self.path(PLAN_LABELS))

    @property
    def has_patient_model(self) -> bool:
        return self.path(PATIENT_MODEL).is_file()

    def fractions(self) -> list[tuple[Path, Path]]:
        return [(self.root / FRACTIONS / f["ct"], self.root / FRACTIONS / f["labels"])
                for f in self.manifest.get("fractions", [])]

    def save(self) -> None:
        write_json(self.manifest, self.path(MANIFEST))

    def check_population(self, sha256: str, class_names: Sequence[str], source: str) -> None:
        """Refuse a population model this patient directory was not made from."""
        if tuple(class_names) != self.class_names:
            raise DataError(f"{self.root}: made for classes {list(self.class_names)}, {source} has "
                            f"{list(class_names)}; prepare the patient again with this model")
        if sha256 != self.population_sha256:
            raise DataError(f"{self.root}: made from population model sha256 {self.population_sha256[:12]}..., "
                            f"{source} is {sha256[:12]}...; prepare the patient again with this model")


def create_patient_dir(out: str | Path, population: str | Path, ct: Volume, labels: Volume,
                       class_names: Sequence[str]) -> PatientDir:
    """A new PATIENT_DIR (refused if ``out`` exists and is not empty) without the patient model yet."""
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{root}: the patient directory exists and is not empty; choose a new one")
    contoured = sorted(int(c) for c in np.unique(labels.array) if 0 < c < len(class_names))
    if not contoured:
        raise DataError("the planning contours hold none of the model's organs "
                        f"({', '.join(class_names[1:])}); nothing to adapt to")
    root.mkdir(parents=True, exist_ok=True)
    write_nifti(ct, root / PLAN_CT)
    write_nifti(labels, root / PLAN_LABELS, dtype=np.uint8)
    shutil.copyfile(population, root / POPULATION)
    manifest = {
        "format": FORMAT, "kind": "rtseg adapt patient", "class_names": list(class_names), "contoured": contoured,
        "planning": planning_provenance(ct),
        "population": {"file": Path(population).name, "sha256": file_sha256(root / POPULATION)},
        "patient_model": None, "fractions": [],
    }
    pdir = PatientDir(root, manifest)
    pdir.save()
    return pdir


def open_patient_dir(path: str | Path) -> PatientDir:
    """A PATIENT_DIR after its checks: manifest readable, files present, the population copy unchanged and the
    patient model made for the same classes."""
    root = Path(path)
    if not (root / MANIFEST).is_file():
        raise DataError(f"{root}: not a patient directory (no {MANIFEST}; make one with 'rtseg adapt prepare')")
    manifest = read_json(root / MANIFEST, "patient manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "class_names" not in manifest:
        raise DataError(f"{root / MANIFEST}: not an rtseg adapt patient manifest (format {FORMAT})")
    for name in (PLAN_CT, PLAN_LABELS, POPULATION):
        if not (root / name).is_file():
            raise DataError(f"{root}: {name} is missing")
    pdir = PatientDir(root, manifest)
    sha = file_sha256(root / POPULATION)
    if sha != pdir.population_sha256:
        raise DataError(f"{root / POPULATION}: sha256 {sha[:12]}... is not the recorded {pdir.population_sha256[:12]}...")
    if pdir.has_patient_model:
        from rtseg.inference.bundle import load_bundle

        bundle = load_bundle(root / PATIENT_MODEL)[0]
        if tuple(bundle.class_names) != pdir.class_names:
            raise DataError(f"{root / PATIENT_MODEL}: classes {list(bundle.class_names)}, the patient directory's "
                            f"{list(pdir.class_names)}")
    return pdir
