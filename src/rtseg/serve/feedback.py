"""The clinic's version comes back: RT Structure Sets received by the node, recorded, and measured against its output.

Receiving (in the SCP thread, no measuring): the instance is written (atomically, fsync) under
``STORE/feedback/`` and then one row in ``clinic_sets`` (same SQLite file as the jobs, WAL, synchronous
FULL) before C-STORE success, so ``kill -9`` loses no acknowledged set. Its fate:

- the SOP Instance was stored before: success, stored once;
- it refers to a CT series the node received and its Frame of Reference is not that CT's: refused
  (``0xC000``, the reason in the log), not stored;
- it is the node's own output (the SOP Instance UID of the job's RTSTRUCT): ``own``, not measured;
- it refers to a series the node never received: ``unmatched``, kept (matched if that series comes later);
- else ``pending``: the feedback loop (:func:`FeedbackLoop.run`) measures it once the series is contoured:
  every organ of the node's RTSTRUCT against the clinic's on the CT grid (:mod:`rtseg.evaluation.edits`),
  one ``edits`` row per organ with the model version (first 12 hex digits of the checkpoint's SHA-256)
  and the time; then ``measured`` (or ``failed`` with the reason).

The header facts kept are the approval status, label, date and the organs the set holds; no patient data.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rtseg.audit.pairing import compared_keys, display_name, organ_masks
from rtseg.errors import DataError, RtsegError
from rtseg.evaluation.edits import edit_measures
from rtseg.io.archive.scan import read_file_header
from rtseg.io.atomic import atomic_path
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.rtstruct.provenance import model_version_in, set_provenance
from rtseg.io.rtstruct.read import read_rtstruct
from rtseg.serve.destinations import split_outputs
from rtseg.serve.logs import event, series_ref
from rtseg.serve.models import model_version

CANNOT_UNDERSTAND = 0xC000
FEEDBACK_DIR = "feedback"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clinic_sets (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    calling_ae TEXT NOT NULL,
    state TEXT NOT NULL,
    approval TEXT NOT NULL DEFAULT '',
    label TEXT NOT NULL DEFAULT '',
    set_date TEXT NOT NULL DEFAULT '',
    organs TEXT,
    job_id INTEGER,
    model TEXT,
    error TEXT,
    received_at REAL NOT NULL,
    measured_at REAL
);
CREATE INDEX IF NOT EXISTS clinic_sets_state ON clinic_sets(state);
CREATE TABLE IF NOT EXISTS edits (
    sop_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    organ TEXT NOT NULL,
    status TEXT NOT NULL,
    dice REAL, surface_dice_1mm REAL, surface_dice_2mm REAL, surface_dice_3mm REAL,
    apl_mm REAL, apl_pct REAL, hd95_mm REAL, volume_ratio REAL, vol_auto_ml REAL, vol_approved_ml REAL,
    auto_roi TEXT, approved_roi TEXT, set_date TEXT, approval TEXT, model TEXT, measured_at REAL NOT NULL,
    PRIMARY KEY (sop_uid, organ)
);
"""
EDIT_MEASURES = ("dice", "surface_dice_1mm", "surface_dice_2mm", "surface_dice_3mm", "apl_mm", "apl_pct", "hd95_mm",
                 "volume_ratio", "vol_auto_ml", "vol_approved_ml")


def connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), check_same_thread=False, isolation_level=None, timeout=30)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(_SCHEMA)
    return con


class Feedback:
    """The clinic_sets and edits tables of one node (thread-safe: one connection, one lock)."""

    def __init__(self, store: Path, db: Path, max_bytes: float = 64e6) -> None:
        self.max_bytes = max_bytes
        self.folder = store / FEEDBACK_DIR
        self.folder.mkdir(parents=True, exist_ok=True)
        self.con = connect(db)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.con.close()

    def sql(self, query: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.con.execute(query, params).fetchall()

    # ------------------------------------------------------------------ receiving

    def _contoured_job(self, series_uids: tuple[str, ...]) -> Optional[sqlite3.Row]:
        marks = ",".join("?" * len(series_uids))
        rows = self.sql(f"SELECT * FROM jobs WHERE series_uid IN ({marks}) ORDER BY id DESC", series_uids) if marks else []
        return next((r for r in rows if r["rtstruct"]), rows[0] if rows else None)

    def _ct_frame(self, series_uid: str) -> str:
        row = self.sql("SELECT path FROM instances WHERE series_uid=? LIMIT 1", (series_uid,))
        return set_provenance(row[0]["path"])["frame_uid"] if row else ""

    def receive(self, sop_uid: str, data: bytes, calling_ae: str) -> tuple[int, str]:
        """Store and classify one RTSTRUCT instance; (C-STORE status, what happened)."""
        if self.sql("SELECT 1 FROM clinic_sets WHERE sop_uid=?", (sop_uid,)):
            return 0x0000, "stored before"
        target = self.folder / f"{hashlib.sha256(sop_uid.encode()).hexdigest()[:24]}.dcm"
        with atomic_path(target) as tmp:  # written and fsynced before the row that points at it
            tmp.write_bytes(data)
        try:
            head, when = read_file_header(target), set_provenance(target)["date"]
        except Exception as exc:  # pydicom raises many types for a damaged file
            target.unlink(missing_ok=True)
            raise DataError(f"not a readable RT Structure Set ({type(exc).__name__})") from None
        job = self._contoured_job(head.ref_series)
        if job is not None:
            frame = self._ct_frame(job["series_uid"])
            if frame and head.ref_frames and frame not in head.ref_frames:
                target.unlink(missing_ok=True)
                return CANNOT_UNDERSTAND, (f"RTSTRUCT in Frame of Reference {', '.join(head.ref_frames)}, the CT series "
                                           f"{series_ref(job['series_uid'])} in another: drawn on another scan")
        state = "unmatched" if job is None else "pending"
        if job is not None and job["rtstruct"] and any(
                set_provenance(p)["sop_instance_uid"] == sop_uid for p in split_outputs(job["rtstruct"])
                if p.suffix == ".dcm" and p.is_file()):
            state = "own"
        series = job["series_uid"] if job is not None else (head.ref_series[0] if head.ref_series else "")
        with self.lock:
            self.con.execute("INSERT OR IGNORE INTO clinic_sets (sop_uid, series_uid, path, size, calling_ae, state, "
                             "approval, label, set_date, job_id, received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                             (sop_uid, series, str(target), len(data), calling_ae, state, head.approval, head.label,
                              when, None if job is None else int(job["id"]), time.time()))
        return 0x0000, state

    def on_store(self, e: Any) -> int:
        """The SCP's C-STORE handler for RT Structure Set Storage."""
        sop_uid = str(e.dataset.get("SOPInstanceUID", "") or "")
        calling = e.assoc.requestor.ae_title
        if not sop_uid:
            event(logging.WARNING, "structure set refused", calling_ae=calling, reason="SOPInstanceUID empty")
            return 0xA900
        data = e.encoded_dataset(include_meta=True)
        if len(data) > self.max_bytes:
            event(logging.WARNING, "structure set refused", calling_ae=calling, status="0xA700",
                  reason=f"instance of {len(data) / 1e6:.1f} MB exceeds max_instance_mb={self.max_bytes / 1e6:g}")
            return 0xA700
        try:
            status, what = self.receive(sop_uid, data, calling)
        except (OSError, RtsegError, ValueError) as exc:
            event(logging.WARNING, "structure set refused", calling_ae=calling, reason=str(exc))
            return 0xA700 if isinstance(exc, OSError) else CANNOT_UNDERSTAND
        if status:
            event(logging.WARNING, "structure set refused", calling_ae=calling, status=f"0x{status:04X}", reason=what)
        else:
            event(logging.INFO, "structure set received", calling_ae=calling, state=what)
        return status

    # ------------------------------------------------------------------ measuring

    def match_unmatched(self) -> None:
        """Unmatched sets whose series has arrived since (one query: the set's first referenced series)."""
        rows = self.sql("SELECT c.sop_uid, MAX(j.id) AS job_id FROM clinic_sets c JOIN jobs j ON j.series_uid = c.series_uid "
                        "WHERE c.state='unmatched' GROUP BY c.sop_uid")
        with self.lock:
            for r in rows:
                self.con.execute("UPDATE clinic_sets SET state='pending', job_id=? WHERE sop_uid=?",
                                 (int(r["job_id"]), r["sop_uid"]))

    def measure(self, row: sqlite3.Row, series_dir: Path) -> Optional[int]:
        """Measure one pending set when its job's RTSTRUCT exists; the number of organ rows, None if not yet."""
        job = self.sql("SELECT * FROM jobs WHERE id=?", (row["job_id"],))[0]
        autos = [p for p in split_outputs(job["rtstruct"] or "") if p.name.endswith("rtstruct.dcm")]
        if not autos:
            if job["state"] in ("failed", "unrouted"):
                self._set(row["sop_uid"], "failed", error=f"the node did not contour this series: {job['error']}")
            elif job["state"] in ("sending", "done"):
                self._set(row["sop_uid"], "failed", error="the node wrote no RTSTRUCT for this series (its rule's formats)")
            return None
        ct = read_dicom_series(series_dir)
        auto, clinic = organ_masks(read_rtstruct(autos[0]), ct), organ_masks(read_rtstruct(row["path"]), ct)
        version, now = model_version_in(job["model"] or "") or model_version(job["checkpoint"]), time.time()
        empty = np.zeros(ct.shape, dtype=bool)
        rows, organs = [], []
        for key in compared_keys(auto, clinic):
            a, b = auto.get(key), clinic.get(key)
            if b:
                organs.append(display_name(key, b[1]))
            m = edit_measures(a[0] if a else empty, b[0] if b else empty, ct.spacing)
            rows.append((row["sop_uid"], job["series_uid"], display_name(key, (a or b)[1]), m["status"],  # type: ignore[index]
                         *(m[k] for k in EDIT_MEASURES), ";".join(a[1]) if a else "", ";".join(b[1]) if b else "",
                         row["set_date"], row["approval"], version, now))
        with self.lock:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.executemany(f"INSERT OR REPLACE INTO edits VALUES ({','.join('?' * 20)})", rows)
            self.con.execute("UPDATE clinic_sets SET state='measured', organs=?, model=?, measured_at=? WHERE sop_uid=?",
                             (json.dumps(organs), version, now, row["sop_uid"]))
            self.con.execute("COMMIT")
        return len(rows)

    def _set(self, sop_uid: str, state: str, error: str = "") -> None:
        with self.lock:
            self.con.execute("UPDATE clinic_sets SET state=?, error=? WHERE sop_uid=?", (state, error or None, sop_uid))

    def edit_rows(self) -> list[dict[str, Any]]:
        """Every measured organ, as ``rtseg audit compare`` rows (``case`` = the CT's SeriesInstanceUID)."""
        out = []
        for r in self.sql("SELECT * FROM edits ORDER BY set_date, measured_at, organ"):
            d = dict(r)
            d["case"], d["date"] = d.pop("series_uid"), d.pop("set_date")
            out.append(d)
        return out
