"""The node's feedback thread: measure the clinic's sets as their series are contoured; the drift alarm.

After each pass that measured something: the drift states of every organ (:mod:`rtseg.audit.drift`, with
the config's ``drift_window``, ``drift_margin``, ``drift_baseline``); an organ that goes into alarm is
logged (``drift alarm``, a warning) and one that recovers too (``drift cleared``); ``STORE/audit/``
gets ``edits.csv``, and the dashboard (``rtseg audit report`` on the node's edits) once a burst of
sets is measured (at most every 30 s while sets keep coming). ``rtseg serve status``
reads the same tables (:func:`status_lines`).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

from rtseg.audit.compare import PAIRING_NAME, write_edits_csv
from rtseg.audit.pages import REVIEW_DIR, most_edited, page_name, write_case_page
from rtseg.audit.pairing import PairData, organ_masks
from rtseg.audit.drift import DriftState, drift_states
from rtseg.audit.report import build_report, load_baseline
from rtseg.errors import RtsegError
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.jsonfile import write_json
from rtseg.io.rtstruct.read import read_rtstruct
from rtseg.serve.config import ServeConfig
from rtseg.serve.destinations import split_outputs
from rtseg.serve.feedback import Feedback
from rtseg.serve.logs import event, series_ref
from rtseg.serve.models import promotions

AUDIT_DIR = "audit"
DASHBOARD_EVERY_S = 30.0
log = logging.getLogger("rtseg.serve")


class FeedbackLoop:
    def __init__(self, cfg: ServeConfig, feedback: Feedback, series_dir: Any, stop: threading.Event) -> None:
        self.cfg, self.fb, self.series_dir, self.stop = cfg, feedback, series_dir, stop
        self.baseline = load_baseline(cfg.drift_baseline) if cfg.drift_baseline else None
        self.alarms: set[str] = {d.organ for d in self.drift() if d.alarm}
        self.dashboard_due: Optional[float] = None

    def drift(self) -> list[DriftState]:
        return drift_states(self.fb.edit_rows(), self.cfg.drift_window, self.cfg.drift_margin, self.baseline)

    def one_pass(self) -> int:
        """Match, measure what can be; the number of sets measured."""
        self.fb.match_unmatched()
        n = 0
        for row in self.fb.sql("SELECT * FROM clinic_sets WHERE state='pending' ORDER BY received_at"):
            try:
                got = self.fb.measure(row, self.series_dir(row["series_uid"]))
            except (RtsegError, OSError) as exc:
                self.fb._set(row["sop_uid"], "failed", str(exc))
                event(logging.WARNING, "structure set not measured", series=series_ref(row["series_uid"]), reason=str(exc))
                continue
            if got is not None:
                n += 1
                event(logging.INFO, "structure set measured", series=series_ref(row["series_uid"]), organs=got,
                      job=row["job_id"])
        if n:
            self.after_measuring()
        if self.dashboard_due is not None and (n == 0 or time.monotonic() >= self.dashboard_due):
            self.write_dashboard()
        return n

    def after_measuring(self) -> None:
        states = self.drift()
        for d in states:
            if d.alarm and d.organ not in self.alarms:
                event(logging.WARNING, "drift alarm", organ=d.organ, rolling_median=round(d.current or 0, 4),
                      baseline=round(d.baseline or 0, 4), margin=self.cfg.drift_margin, since=d.since)
            elif not d.alarm and d.organ in self.alarms:
                event(logging.INFO, "drift cleared", organ=d.organ)
        self.alarms = {d.organ for d in states if d.alarm}
        out = self.cfg.store_path / AUDIT_DIR
        out.mkdir(parents=True, exist_ok=True)
        write_edits_csv(self.fb.edit_rows(), out / "edits.csv")
        if self.dashboard_due is None:  # a burst of sets: the page once it is over, or every DASHBOARD_EVERY_S
            self.dashboard_due = time.monotonic() + DASHBOARD_EVERY_S

    def write_dashboard(self, pages: int = 5) -> None:
        """The dashboard, with review pages (auto and approved together) of the ``pages`` most edited cases."""
        self.dashboard_due = None
        out = self.cfg.store_path / AUDIT_DIR
        rows = self.fb.edit_rows()
        cases = []
        for uid in most_edited(rows, pages):
            rel = f"{REVIEW_DIR}/{page_name(uid)}"
            try:
                if (out / rel).is_file() or self.review_page(uid, out / rel):
                    cases.append({"case": uid, "review_page": rel})
            except (RtsegError, OSError) as exc:
                event(logging.WARNING, "review page not written", series=series_ref(uid), reason=str(exc))
        write_json({"cases": cases}, out / PAIRING_NAME)
        build_report([out / "edits.csv"], out, window=self.cfg.drift_window, margin=self.cfg.drift_margin,
                     baseline=self.baseline)

    def review_page(self, series_uid: str, path: Path) -> bool:
        """The review page of the newest measured set of a series against the node's RTSTRUCT of it (False: none)."""
        rows = self.fb.sql("SELECT c.path, j.rtstruct FROM clinic_sets c JOIN jobs j ON j.id = c.job_id WHERE "
                           "c.series_uid=? AND c.state='measured' ORDER BY c.measured_at DESC LIMIT 1", (series_uid,))
        if not rows or not rows[0]["rtstruct"]:
            return False
        row = rows[0]
        auto_path = next((p for p in split_outputs(row["rtstruct"]) if p.name.endswith("rtstruct.dcm")), None)
        if auto_path is None:
            return False
        ct = read_dicom_series(self.series_dir(series_uid))
        auto, clinic = read_rtstruct(auto_path), read_rtstruct(row["path"])
        data = PairData(ct, auto, clinic, organ_masks(auto, ct), organ_masks(clinic, ct))
        write_case_page(data, path, f"rtseg node audit: auto (top) and approved (bottom), {series_ref(series_uid)}")
        return True

    def run(self, poll_s: float = 0.5) -> None:
        while not self.stop.is_set():
            try:
                self.one_pass()
            except Exception:  # keep the node up; the next pass retries
                log.exception("feedback pass failed")
            self.stop.wait(poll_s)


def status_lines(store: str | Path, window: int = 10, margin: float = 0.05, baseline: Optional[str] = None) -> list[str]:
    """The clinic's sets per state, the model promotions and the drift alarm, for ``rtseg serve status``."""
    store = Path(store)
    db = store / "jobs.sqlite"
    fb = Feedback(store, db)
    try:
        counts = {r[0]: r[1] for r in fb.sql("SELECT state, COUNT(*) FROM clinic_sets GROUP BY state")}
        rows = fb.edit_rows()
    finally:
        fb.close()
    lines = []
    if counts:
        lines.append("clinic structure sets: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for rule, ckpt, model, _ in promotions(db)[-1:]:
        lines.append(f"model: {model} ({Path(ckpt).name}, promoted for rule {rule})")
    if rows:
        states = drift_states(rows, window, margin, load_baseline(baseline) if baseline else None)
        alarms = [d for d in states if d.alarm]
        lines.append(f"drift alarm: {len(alarms)} organ(s)" if alarms else "drift alarm: none")
        lines += ["  " + d.text(margin) for d in states]
    return lines
