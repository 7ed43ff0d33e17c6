"""A clinic's DICOM export as it comes, sorted into cases: one CT series and the structure sets drawn on it.

Any folder layout (a folder per patient, or one flat dump), files with or without extension; a
DICOMDIR is an index of files that are also in the tree, so the tree itself is scanned. Files are
grouped by patient, study and Frame of Reference from their headers alone. A case is a CT series
that at least one RTSTRUCT refers to (by SeriesInstanceUID, else by Frame of Reference when it
names no series and one CT of that patient shares it). Everything else is reported, never silently
dropped: MR, CBCT, RTPLAN, RTDOSE, REG and other objects are *ignored*, an RTSTRUCT whose series is
not a CT of the export is *refused* with its reason, a CT no structure set refers to *fails*.

Patient IDs are only compared (as hashes), never stored or printed.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pydicom
from pydicom.uid import RTStructureSetStorage

from rtseg.errors import DataError
from rtseg.io.dicom.series import looks_like_dicom

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")  # characters kept in a case folder's name
_BASIC = ["Modality", "SOPClassUID", "SOPInstanceUID", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
          "FrameOfReferenceUID", "Rows", "Columns"]


@dataclass(frozen=True)
class DicomFile:
    """What grouping needs from one file's header (the patient only as a hash)."""

    path: Path
    modality: str
    sop_uid: str
    patient: str
    study_uid: str
    series_uid: str
    frame_uid: str
    # RTSTRUCT only
    ref_series: tuple[str, ...] = ()
    ref_frames: tuple[str, ...] = ()
    label: str = ""
    approval: str = ""
    date: str = ""
    time: str = ""


@dataclass(frozen=True)
class ArchiveCase:
    """One CT series to convert and the structure sets that refer to it."""

    name: str
    ct_files: tuple[Path, ...]
    structure_sets: tuple[DicomFile, ...]
    series_uid: str
    study_uid: str
    frame_uid: str


@dataclass
class ArchiveIndex:
    cases: list[ArchiveCase] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case or file, reason)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (RTSTRUCT file, reason)
    ignored: dict[str, int] = field(default_factory=dict)  # modality -> file count
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    dicomdir: bool = False
    n_patients: int = 0
    n_ct_series: int = 0


def _text(ds: pydicom.Dataset, key: str) -> str:
    return str(ds.get(key, "") or "").strip()


def _rtstruct_refs(ds: pydicom.Dataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    series, frames = [], []
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.append(_text(fr, "FrameOfReferenceUID"))
        for st in fr.get("RTReferencedStudySequence", []):
            series += [_text(se, "SeriesInstanceUID") for se in st.get("RTReferencedSeriesSequence", [])]
    return tuple(s for s in series if s), tuple(f for f in frames if f)


def read_file_header(path: Path) -> DicomFile:
    """The grouping facts of one file; an RTSTRUCT is read whole (its references are sequences)."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_BASIC)
    modality = _text(ds, "Modality")
    if not modality and not _text(ds, "SOPClassUID"):
        raise ValueError("neither Modality nor SOPClassUID")
    patient = hashlib.sha256(_text(ds, "PatientID").encode()).hexdigest()[:16]
    common = dict(path=path, sop_uid=_text(ds, "SOPInstanceUID"), patient=patient, study_uid=_text(ds, "StudyInstanceUID"),
                  series_uid=_text(ds, "SeriesInstanceUID"), frame_uid=_text(ds, "FrameOfReferenceUID"))
    if modality == "RTSTRUCT" or _text(ds, "SOPClassUID") == RTStructureSetStorage:
        full = pydicom.dcmread(path, stop_before_pixels=True)
        series, frames = _rtstruct_refs(full)
        return DicomFile(modality="RTSTRUCT", ref_series=series, ref_frames=frames, label=_text(full, "StructureSetLabel"),
                         approval=_text(full, "ApprovalStatus").upper(), date=_text(full, "StructureSetDate"),
                         time=_text(full, "StructureSetTime"), **common)
    if modality == "CT" and "Rows" not in ds:
        modality = "CT (no image)"
    return DicomFile(modality=modality or "?", **common)


def archive_files(root: Path) -> tuple[list[Path], bool]:
    """Candidate DICOM files under ``root`` (hidden ones and non-DICOM suffixes left out) and whether a DICOMDIR is there."""
    files, dicomdir = [], False
    for p in sorted(root.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        if p.name.upper() == "DICOMDIR":
            dicomdir = True
        elif looks_like_dicom(p):
            files.append(p)
    return files, dicomdir


def read_headers(paths: Sequence[Path]) -> tuple[list[DicomFile], list[tuple[str, str]]]:
    """Headers of ``paths``; unreadable files are returned with their reason (a batch goes on)."""
    out, bad = [], []
    for p in paths:
        try:
            out.append(read_file_header(p))
        except Exception as exc:  # pydicom raises many types for damaged files
            bad.append((str(p), f"not a readable DICOM file ({type(exc).__name__})"))
    return out, bad


def _case_name(root: Path, files: Sequence[Path], series_uid: str, taken: Counter) -> str:
    tops = {f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}
    if len(tops) == 1:
        base = _SAFE.sub("_", tops.pop()).strip("_") or "case"
    else:
        base = "case_" + hashlib.sha256(series_uid.encode()).hexdigest()[:10]
    taken[base] += 1
    return base if taken[base] == 1 else f"{base}_{taken[base]}"


def _target(rs: DicomFile, cts: dict[str, list[DicomFile]], images: dict[str, DicomFile]) -> tuple[str | None, str]:
    """The CT series an RTSTRUCT is drawn on, or None and why not."""
    where = f"RTSTRUCT {rs.path.name}" + (f" ({rs.label!r})" if rs.label else "")
    if rs.approval == "REJECTED":
        return None, f"{where}: ApprovalStatus REJECTED"
    for uid in rs.ref_series:
        if uid in cts:
            return uid, ""
    if rs.ref_series:
        kinds = sorted({images[u].modality for u in rs.ref_series if u in images})
        what = f"a {'/'.join(kinds)} series, not a CT" if kinds else "a series that is not in the export"
        return None, (f"{where} refers to {what} ({', '.join(rs.ref_series)}, Frame of Reference "
                      f"{', '.join(rs.ref_frames) or '?'}): drawn on another scan")
    same = [u for u, fs in cts.items() if fs[0].patient == rs.patient and fs[0].frame_uid in rs.ref_frames]
    if len(same) == 1:
        return same[0], ""
    return None, (f"{where} names no series and {len(same)} CT series of its patient share its Frame of Reference "
                  f"{', '.join(rs.ref_frames) or '?'}")


def index_archive(root: Path, headers: Iterable[DicomFile]) -> ArchiveIndex:
    """Sort the headers into cases, refusals and ignored objects (see the module rule)."""
    index = ArchiveIndex()
    cts: dict[str, list[DicomFile]] = defaultdict(list)
    images: dict[str, DicomFile] = {}
    structs: list[DicomFile] = []
    ignored: Counter = Counter()
    patients = set()
    for h in headers:
        patients.add(h.patient)
        if h.modality == "CT":
            cts[h.series_uid].append(h)
        elif h.modality == "RTSTRUCT":
            structs.append(h)
        else:
            ignored[h.modality] += 1
            images.setdefault(h.series_uid, h)
    index.ignored, index.n_patients, index.n_ct_series = dict(sorted(ignored.items())), len(patients), len(cts)
    by_ct: dict[str, list[DicomFile]] = defaultdict(list)
    refused_by_patient: dict[str, list[str]] = defaultdict(list)
    for rs in structs:
        uid, reason = _target(rs, cts, images)
        if uid is None:
            index.refused.append((str(rs.path.relative_to(root)), reason))
            refused_by_patient[rs.patient].append(reason)
        else:
            by_ct[uid].append(rs)
    taken: Counter = Counter()
    for uid in sorted(cts, key=lambda u: (str(sorted(f.path for f in cts[u])[0]), u)):
        files = cts[uid]
        name = _case_name(root, [f.path for f in files], uid, taken)
        if uid not in by_ct:
            why = "; ".join(refused_by_patient.get(files[0].patient, [])) or "no RTSTRUCT of this patient"
            index.failed.append((name, f"no RTSTRUCT refers to CT series {uid} ({len(files)} slices): {why}"))
            continue
        index.cases.append(ArchiveCase(name, tuple(sorted(f.path for f in files)),
                                       tuple(sorted(by_ct[uid], key=lambda r: r.sop_uid)), uid, files[0].study_uid, files[0].frame_uid))
    return index


def need_archive(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    """The folder to scan (a DICOMDIR given as input stands for its folder) and whether a DICOMDIR was named."""
    p = Path(path)
    if p.is_file() and p.name.upper() == "DICOMDIR":
        return p.parent, True
    if not p.is_dir():
        raise DataError(f"{p}: input folder not found")
    return p, False
