"""One case of an archive conversion, runnable in a worker process: hash the inputs, skip if done, else
read the CT and its structure sets, apply the several-set rule, write the pair and then its record.

A case is committed by its record (``OUT/.rtseg/cases/<case>.json``), written last and atomically
after both NIfTI files: an interrupted run leaves at most NIfTI files without a record, which the
next run converts again and the dataset JSON never lists. A record whose input hash (every input
file's bytes, the organ list and the aliases) matches lets a re-run skip the case.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, NamedTuple

import numpy as np

from rtseg.errors import DataError, RtsegError
from rtseg.io.archive.scan import ArchiveCase
from rtseg.io.dicom.series import read_dicom_files
from rtseg.io.jsonfile import write_json
from rtseg.io.naming import ct_file, labels_file
from rtseg.io.nifti import write_nifti
from rtseg.io.rtstruct.read import read_rtstruct
from rtseg.io.rtstruct.structure_sets import SetHeader, labels_from_sets

RECORDS = Path(".rtseg") / "cases"
RECORD_VERSION = 1
_KEEP_DTYPES = (np.dtype(np.int16), np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


class CaseJob(NamedTuple):
    """One case to convert, as a worker process receives it (plain, picklable values)."""

    case: ArchiveCase
    root: Path
    out: Path
    class_names: tuple[str, ...]
    aliases: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class CaseResult:
    name: str
    status: str  # converted | skipped | failed
    record: dict[str, Any] | None = None
    reason: str = ""


def record_path(out: Path, name: str) -> Path:
    return out / RECORDS / f"{name}.json"


def input_hash(job: CaseJob) -> str:
    """BLAKE2 of the conversion options and every input file's relative path and bytes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps([RECORD_VERSION, list(job.class_names), [list(a) for a in job.aliases]]).encode())
    for p in (*job.case.ct_files, *(s.path for s in job.case.structure_sets)):
        h.update(str(p.relative_to(job.root)).encode() + b"\0")
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _done(job: CaseJob, digest: str) -> dict[str, Any] | None:
    rec = record_path(job.out, job.case.name)
    if not rec.is_file() or not (job.out / ct_file(job.case.name)).is_file() or not (job.out / labels_file(job.case.name)).is_file():
        return None
    try:
        record = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if record.get("input_hash") == digest else None


def _convert(job: CaseJob, digest: str) -> dict[str, Any]:
    case = job.case
    ct = read_dicom_files(case.ct_files, case.name)
    sets = []
    for s in case.structure_sets:
        sets.append((SetHeader(s.sop_uid, s.label, s.approval, s.date, s.time), read_rtstruct(s.path)))
    aliases: Mapping[str, Sequence[str]] = {k: list(v) for k, v in job.aliases}
    result = labels_from_sets(ct, sets, job.class_names, aliases)
    if not result.contoured:
        names = ", ".join(sorted(result.roi_names)) or "none"
        raise DataError(f"no requested organ in its structure sets (ROI names: {names}); see the name report")
    ct_dtype = ct.array.dtype if ct.array.dtype in _KEEP_DTYPES else np.float32
    write_nifti(ct.with_array(ct.array.astype(ct_dtype, copy=False)), job.out / ct_file(case.name))
    write_nifti(result.labels, job.out / labels_file(case.name), dtype=np.uint8)
    record = {
        "version": RECORD_VERSION, "input_hash": digest, "shape": list(ct.shape),
        "spacing_mm": [round(float(s), 4) for s in ct.spacing],
        "source": {"study_instance_uid": case.study_uid, "series_instance_uid": case.series_uid,
                   "frame_of_reference_uid": case.frame_uid, "n_slices": len(case.ct_files),
                   "structure_sets": [s.sop_uid for s in case.structure_sets]},
        "contoured": result.contoured, "organs": result.organs, "refused_sets": result.refused_sets,
        "roi_names": result.roi_names, "notes": result.notes,
    }
    write_json(record, record_path(job.out, case.name))  # last: commits the case
    return record


def run_case(job: CaseJob) -> CaseResult:
    """Convert (or skip) one case; any failure becomes the case's reason, the batch goes on."""
    name = job.case.name
    try:
        digest = input_hash(job)
        done = _done(job, digest)
        if done is not None:
            return CaseResult(name, "skipped", done)
        return CaseResult(name, "converted", _convert(job, digest))
    except RtsegError as exc:
        return CaseResult(name, "failed", reason=str(exc))
    except Exception as exc:  # one malformed patient must not stop a batch
        return CaseResult(name, "failed", reason=f"unexpected {type(exc).__name__}: {exc}")
