"""The durable job queue: one SQLite file (WAL), so ``kill -9`` at any moment loses nothing.

A job is one received series on its way to an RTSTRUCT:
``received -> complete -> contouring -> sending -> done``, or ``failed`` (with
the reason) or ``unrouted`` (no rule matched: kept, not contoured). The QA gate
may stop a contoured job at ``held`` (its deliveries wait, state ``held``) until
a person releases it (``sending``, then ``done``) or rejects it (``rejected``);
who and when are kept (``reviewed_by``, ``reviewed_at``). Each job keeps the
model that contoured it (checkpoint name + SHA-256) and its QA flags. Every
transition is one transaction; files are written (atomically) before the row
that points at them, so a restart finds either the old state or the new one.
Each delivery (job x destination) is its own row, so a destination that is
down only delays its own copy.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

STATES = ("received", "complete", "contouring", "held", "sending", "done", "failed", "unrouted", "rejected")
FINAL_STATES = ("done", "failed", "unrouted", "rejected")
#: Columns added after the first release: an older database gets them on open (``ALTER TABLE``).
_ADDED_COLUMNS = (("model", "TEXT"), ("qa", "TEXT"), ("reviewed_by", "TEXT"), ("reviewed_at", "REAL"))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    series_uid TEXT NOT NULL,
    series_ref TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    peer_host TEXT NOT NULL,
    modality TEXT NOT NULL DEFAULT '',
    body_part TEXT NOT NULL DEFAULT '',
    series_description TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    n_instances INTEGER NOT NULL DEFAULT 0,
    interrupted TEXT,
    rule TEXT,
    checkpoint TEXT,
    rtstruct TEXT,
    error TEXT,
    timings TEXT,
    first_received_at REAL NOT NULL,
    last_received_at REAL NOT NULL,
    released_at REAL,
    completed_at REAL,
    contour_started_at REAL,
    contour_finished_at REAL,
    delivered_at REAL,
    updated_at REAL NOT NULL,
    model TEXT,
    qa TEXT,
    reviewed_by TEXT,
    reviewed_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_series ON jobs(series_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL,
    last_error TEXT,
    sent_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries(state);
CREATE TABLE IF NOT EXISTS problems (
    sop_uid TEXT PRIMARY KEY,
    job_id INTEGER NOT NULL,
    instance_number TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class InstanceInfo:
    """What the queue keeps of one received instance (no patient information)."""

    sop_uid: str
    series_uid: str
    series_ref: str
    modality: str
    body_part: str
    series_description: str


@dataclass(frozen=True)
class Delivery:
    id: int
    job_id: int
    destination: str
    attempts: int
    rtstruct: str
    series_ref: str


class JobQueue:
    """Thread-safe access to the job database (one connection, one lock: writes are tiny)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            have = {r[1] for r in self._db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in have:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, tuple(params))

    def _in_transaction(self, fn: Any) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn()
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    # ----------------------------------------------------------------- receiving

    def has_instance(self, sop_uid: str) -> bool:
        with self._lock:
            return self._tx("SELECT 1 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone() is not None

    def open_job(self, series_uid: str) -> Optional[sqlite3.Row]:
        with self._lock:
            return self._tx("SELECT * FROM jobs WHERE series_uid=? AND state='received' ORDER BY id DESC LIMIT 1",
                            (series_uid,)).fetchone()

    def series_count(self, series_uid: str) -> int:
        with self._lock:
            return int(self._tx("SELECT COUNT(*) FROM instances WHERE series_uid=?", (series_uid,)).fetchone()[0])

    def add_instance(self, info: InstanceInfo, path: Path, size: int, calling_ae: str, peer_host: str) -> tuple[int, bool]:
        """Record a stored instance: (job id, True if this SOP Instance UID was already stored)."""

        def tx() -> tuple[int, bool]:
            now = time.time()
            job = self._tx("SELECT id FROM jobs WHERE series_uid=? AND state='received' ORDER BY id DESC LIMIT 1",
                           (info.series_uid,)).fetchone()
            known = self._tx("SELECT job_id FROM instances WHERE sop_uid=?", (info.sop_uid,)).fetchone()
            if known is not None:
                if job is not None:
                    self._tx("UPDATE jobs SET last_received_at=?, updated_at=? WHERE id=?", (now, now, job["id"]))
                return (int(job["id"]) if job is not None else int(known["job_id"])), True
            if job is None:
                cur = self._tx(
                    "INSERT INTO jobs (series_uid, series_ref, calling_ae, peer_host, modality, body_part, "
                    "series_description, state, first_received_at, last_received_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?, 'received', ?,?,?)",
                    (info.series_uid, info.series_ref, calling_ae, peer_host, info.modality, info.body_part,
                     info.series_description, now, now, now))
                job_id = int(cur.lastrowid)  # type: ignore[arg-type]
            else:
                job_id = int(job["id"])
            self._tx("INSERT INTO instances VALUES (?,?,?,?,?,?)", (info.sop_uid, info.series_uid, job_id, str(path),
                                                                  size, now))
            n = self._tx("SELECT COUNT(*) FROM instances WHERE series_uid=?", (info.series_uid,)).fetchone()[0]
            self._tx("UPDATE jobs SET n_instances=?, last_received_at=?, updated_at=? WHERE id=?", (n, now, now, job_id))
            return job_id, False

        return self._in_transaction(tx)  # type: ignore[no-any-return]

    def add_problem(self, job_id: int, sop_uid: str, instance_number: str, reason: str) -> None:
        """A stored instance that cannot be contoured (integrity.instance_problem): its series will fail."""
        with self._lock:
            self._tx("INSERT OR REPLACE INTO problems VALUES (?,?,?,?)", (sop_uid, job_id, instance_number, reason))

    def problems(self, job_id: int) -> list[tuple[str, str]]:
        """(InstanceNumber, reason) of the job's damaged instances."""
        with self._lock:
            rows = self._tx("SELECT instance_number, reason FROM problems WHERE job_id=? ORDER BY rowid",
                            (job_id,)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def stored_bytes(self) -> int:
        with self._lock:
            return int(self._tx("SELECT COALESCE(SUM(size), 0) FROM instances").fetchone()[0])

    def mark_interrupted(self, series_uids: Iterable[str], reason: str) -> None:
        """The sender did not finish these series (abort, refusal, restart): not complete until sent again."""
        now = time.time()
        with self._lock:
            for uid in series_uids:
                self._tx("UPDATE jobs SET interrupted=?, updated_at=? WHERE series_uid=? AND state='received'",
                         (reason, now, uid))

    def mark_released(self, series_uids: Iterable[str]) -> None:
        """The association that sent these series ended normally: whatever interrupted them before is healed."""
        now = time.time()
        with self._lock:
            for uid in series_uids:
                self._tx("UPDATE jobs SET interrupted=NULL, released_at=?, updated_at=? "
                         "WHERE series_uid=? AND state='received'", (now, now, uid))

    def due(self, timeout: float, on_release: bool = False) -> list[sqlite3.Row]:
        """Jobs still receiving whose last instance came more than ``timeout`` seconds ago
        (``on_release``: or whose sender released its association after the last instance)."""
        released = " OR released_at >= last_received_at" if on_release else ""
        with self._lock:
            return self._tx(f"SELECT * FROM jobs WHERE state='received' AND (last_received_at < ?{released}) "
                            "ORDER BY id", (time.time() - timeout,)).fetchall()

    # ----------------------------------------------------------------- transitions

    def set_complete(self, job_id: int, rule: str, checkpoint: str) -> None:
        now = time.time()
        with self._lock:
            self._tx("UPDATE jobs SET state='complete', rule=?, checkpoint=?, completed_at=?, updated_at=? "
                     "WHERE id=? AND state='received'", (rule, checkpoint, now, now, job_id))

    def set_final(self, job_id: int, state: str, reason: str) -> None:
        """``failed`` or ``unrouted``, with the reason."""
        assert state in ("failed", "unrouted"), state
        now = time.time()
        with self._lock:
            self._tx("UPDATE jobs SET state=?, error=?, completed_at=COALESCE(completed_at, ?), updated_at=? WHERE id=?",
                     (state, reason, now, now, job_id))

    def claim(self) -> Optional[sqlite3.Row]:
        """The oldest complete job, now ``contouring`` (arrival order: by completion, then id)."""

        def tx() -> Optional[sqlite3.Row]:
            row = self._tx("SELECT * FROM jobs WHERE state='complete' ORDER BY completed_at, id LIMIT 1").fetchone()
            if row is None:
                return None
            now = time.time()
            self._tx("UPDATE jobs SET state='contouring', contour_started_at=?, updated_at=? WHERE id=?",
                     (now, now, row["id"]))
            return row

        return self._in_transaction(tx)  # type: ignore[no-any-return]

    def contoured(self, job_id: int, rtstruct: Path, timings: dict[str, float], destinations: list[str],
                  model: str = "", qa: Optional[dict[str, Any]] = None, hold: bool = False) -> None:
        """RTSTRUCT written: queue one delivery per destination (none: done); ``hold``: the deliveries wait for
        :meth:`release`. ``model`` and ``qa`` (the gate's verdict and the flags) are kept with the job."""

        def tx() -> None:
            now = time.time()
            state = "held" if hold else "sending" if destinations else "done"
            self._tx("UPDATE jobs SET state=?, rtstruct=?, timings=?, contour_finished_at=?, updated_at=?, "
                     "delivered_at=?, model=?, qa=? WHERE id=?",
                     (state, str(rtstruct), json.dumps(timings), now, now, None if destinations or hold else now,
                      model, json.dumps(qa) if qa is not None else None, job_id))
            for d in destinations:
                self._tx("INSERT INTO deliveries (job_id, destination, state, next_try_at) VALUES (?,?,?,?)",
                         (job_id, d, "held" if hold else "pending", now))

        self._in_transaction(tx)

    def review(self, job_id: int, by: str, release: bool) -> dict[str, Any]:
        """A person's decision on a held job: release (its deliveries start; none: done) or reject (nothing is
        sent). Returns the job; a job that is not held is a ``ValueError`` naming its state."""

        def tx() -> dict[str, Any]:
            row = self._tx("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                raise ValueError(f"job {job_id}: no such job")
            if row["state"] != "held":
                raise ValueError(f"job {job_id} is {row['state']}, not held: only a held job is released or rejected")
            now = time.time()
            n = self._tx("SELECT COUNT(*) FROM deliveries WHERE job_id=?", (job_id,)).fetchone()[0]
            state = ("sending" if n else "done") if release else "rejected"
            self._tx("UPDATE deliveries SET state=?, next_try_at=? WHERE job_id=? AND state='held'",
                     ("pending" if release else "rejected", now, job_id))
            self._tx("UPDATE jobs SET state=?, reviewed_by=?, reviewed_at=?, updated_at=?, delivered_at=?, error=? "
                     "WHERE id=?", (state, by, now, now, now if release and not n else None,
                                    None if release else f"rejected by {by}", job_id))
            return dict(self._tx("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())

        return self._in_transaction(tx)  # type: ignore[no-any-return]

    def due_deliveries(self) -> list[Delivery]:
        with self._lock:
            rows = self._tx("SELECT d.id, d.job_id, d.destination, d.attempts, j.rtstruct, j.series_ref FROM deliveries d "
                            "JOIN jobs j ON j.id = d.job_id WHERE d.state='pending' AND d.next_try_at <= ? "
                            "ORDER BY d.next_try_at, d.id", (time.time(),)).fetchall()
        return [Delivery(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def delivered(self, delivery_id: int) -> bool:
        """Mark one delivery sent; True when that finished its job."""

        def tx() -> bool:
            now = time.time()
            self._tx("UPDATE deliveries SET state='sent', sent_at=?, attempts=attempts+1 WHERE id=?", (now, delivery_id))
            job_id = self._tx("SELECT job_id FROM deliveries WHERE id=?", (delivery_id,)).fetchone()[0]
            left = self._tx("SELECT COUNT(*) FROM deliveries WHERE job_id=? AND state!='sent'", (job_id,)).fetchone()[0]
            if left == 0:
                self._tx("UPDATE jobs SET state='done', delivered_at=?, updated_at=? WHERE id=?", (now, now, job_id))
            return left == 0

        return self._in_transaction(tx)  # type: ignore[no-any-return]

    def retry_later(self, delivery_id: int, error: str, wait_s: float) -> None:
        now = time.time()
        with self._lock:
            self._tx("UPDATE deliveries SET attempts=attempts+1, last_error=?, next_try_at=? WHERE id=?",
                     (error, now + wait_s, delivery_id))

    # ----------------------------------------------------------------- restart and reporting

    def recover(self) -> dict[str, int]:
        """After a crash: contouring jobs are contoured again; series whose sender had not finished
        are marked interrupted (complete only if sent again)."""

        def tx() -> dict[str, int]:
            now = time.time()
            n_contour = self._tx("UPDATE jobs SET state='complete', updated_at=? WHERE state='contouring'",
                                 (now,)).rowcount
            n_recv = self._tx("UPDATE jobs SET interrupted=?, updated_at=? WHERE state='received' AND "
                              "interrupted IS NULL AND (released_at IS NULL OR released_at < last_received_at)",
                              ("rtseg stopped while the series was being received", now)).rowcount
            n_send = self._tx("SELECT COUNT(*) FROM jobs WHERE state='sending'").fetchone()[0]
            return {"contouring": n_contour, "receiving": n_recv, "sending": int(n_send)}

        return self._in_transaction(tx)  # type: ignore[no-any-return]

    def jobs(self, limit: Optional[int] = None) -> list[dict[str, Any]]:
        with self._lock:
            sql = "SELECT * FROM jobs ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
            rows = [dict(r) for r in self._tx(sql).fetchall()]
            for r in rows:
                r["deliveries"] = [dict(d) for d in self._tx(
                    "SELECT destination, state, attempts, last_error, sent_at FROM deliveries WHERE job_id=? "
                    "ORDER BY id", (r["id"],)).fetchall()]
        return rows[::-1]

    def job(self, job_id: int) -> dict[str, Any]:
        with self._lock:
            return dict(self._tx("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
