"""The node's feedback tables and drift alarm without a network: edits rows of a simulated drift raise the alarm
in the log, in ``rtseg serve status`` and on the node's dashboard; a stable series raises none."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from rtseg.cli.main import main
from rtseg.errors import DataError
from rtseg.serve.config import load_serve_config
from rtseg.serve.feedback import Feedback
from rtseg.serve.feedback_loop import FeedbackLoop
from rtseg.serve.jobs import JobQueue
from rtseg.serve.logs import setup_logging


def _fill(fb: Feedback, organ: str, values: np.ndarray) -> None:
    rows = []
    for i, v in enumerate(values):
        rows.append((f"1.2.9.{organ}.{i}", f"1.2.8.{i}", organ, "edited", v, v, float(v), v, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0,
                     organ, organ, f"2025-01-01 00:{i // 60:02d}:{i % 60:02d}", "APPROVED", "0123456789ab", time.time()))
    with fb.lock:
        fb.con.executemany(f"INSERT INTO edits VALUES ({','.join('?' * 20)})", rows)


@pytest.mark.parametrize("drift", [False, True])
def test_drift_alarm_in_log_status_and_page(tmp_path: Path, drift: bool) -> None:
    store = tmp_path / "store"
    cfg = load_serve_config(None, {"store": str(store), "checkpoint": "unused.pt", "drift_window": 10})
    JobQueue(store / "jobs.sqlite").close()  # the node's database, with its jobs tables
    fb = Feedback(store, store / "jobs.sqlite")
    handlers = setup_logging(store / "log.jsonl", to_stderr=False)
    try:
        loop = FeedbackLoop(cfg, fb, lambda uid: store / "series", threading.Event())
        rng = np.random.default_rng(1)
        values = np.clip(0.95 + 0.02 * rng.standard_normal(40), 0, 1)
        _fill(fb, "Bladder", values)
        _fill(fb, "Rectum", values - (np.r_[np.zeros(20), np.linspace(0, 0.3, 20)] if drift else 0))
        loop.after_measuring()
        loop.write_dashboard()
    finally:
        fb.close()
        for h in handlers:
            logging.getLogger("rtseg.serve").removeHandler(h)
            h.close()
    events = [json.loads(line) for line in (store / "log.jsonl").read_text().splitlines()]
    alarms = [e for e in events if e["event"] == "drift alarm"]
    assert [e["organ"] for e in alarms] == (["Rectum"] if drift else [])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["serve", "status", "--store", str(store)]) == 0
    text = buf.getvalue()
    assert ("drift alarm: 1 organ(s)" in text and "Rectum: DRIFT" in text) if drift else "drift alarm: none" in text
    page = (store / "audit" / "dashboard.html").read_text()
    assert ("Drift alarm: 1 organ(s)" in page) == drift and ("No drift alarm" in page) != drift


def test_unmatched_set_is_matched_when_its_series_arrives_and_stored_once(tmp_path: Path) -> None:
    from audit_data import edit_set, make_case
    from rtseg.serve.jobs import InstanceInfo

    series, _, auto = make_case(tmp_path, "p0", 1)
    approved = edit_set(auto, tmp_path / "approved.dcm", shift_mm={"Bladder": 4.0})
    store = tmp_path / "store"
    queue = JobQueue(store / "jobs.sqlite")
    fb = Feedback(store, store / "jobs.sqlite")
    try:
        data = approved.read_bytes()
        sop = str(pydicom.dcmread(approved).SOPInstanceUID)
        assert fb.receive(sop, data, "TPS") == (0, "unmatched")
        assert fb.receive(sop, data, "TPS") == (0, "stored before")
        uid = series.meta["dicom"]["series_instance_uid"]
        ct_file = sorted((tmp_path / "auto" / "p0" / "ct").glob("*.dcm"))[0]
        job, _ = queue.add_instance(InstanceInfo("1.2.3", uid, "s", "CT", "", ""), ct_file, 1, "SCANNER", "127.0.0.1")
        fb.match_unmatched()
        rows = fb.sql("SELECT state, job_id FROM clinic_sets")
        assert [(r["state"], r["job_id"]) for r in rows] == [("pending", job)]
        assert len(list((store / "feedback").iterdir())) == 1
        with pytest.raises(DataError, match="not a readable RT Structure Set"):  # refused, nothing left behind
            fb.receive("1.2.3.4", b"DICM but not really", "TPS")
        assert len(list((store / "feedback").iterdir())) == 1 and len(fb.sql("SELECT * FROM clinic_sets")) == 1
    finally:
        fb.close()
        queue.close()
