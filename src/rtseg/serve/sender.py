"""Delivery: C-STORE each RTSTRUCT to its destinations, retrying with exponential back-off.

A delivery is never given up: a destination that is down keeps its jobs in
``sending`` and gets them when it comes back. It is marked sent only after the
destination answered success, so a crash in between sends the same RTSTRUCT
(same SOP Instance UID) once more, which a PACS or TPS stores once.
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RTStructureSetStorage
from pynetdicom import AE

from rtseg.serve.config import ServeConfig, parse_destination
from rtseg.serve.jobs import Delivery, JobQueue
from rtseg.serve.logs import event

SUCCESS_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}


def c_store(path: str, destination: str, calling_ae: str, timeout_s: float = 30.0) -> Optional[str]:
    """Send one file; None on success, else why not."""
    dest = parse_destination(destination)
    ds = pydicom.dcmread(path)
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = min(timeout_s, 10.0)
    ae.add_requested_context(RTStructureSetStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        return "association rejected" if assoc.is_rejected else "no association (destination down or unreachable)"
    try:
        status = assoc.send_c_store(ds)
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        return "no C-STORE response (connection lost or timed out)"
    if int(code) not in SUCCESS_STATUSES:
        return f"C-STORE refused with status 0x{int(code):04X}"
    return None


def backoff(attempts: int, initial_s: float, max_s: float) -> float:
    """Wait before attempt ``attempts + 1``: initial, 2x, 4x ... capped."""
    return float(min(max_s, initial_s * 2 ** max(0, attempts)))


class Sender:
    """One thread that delivers whatever is due, oldest first."""

    def __init__(self, cfg: ServeConfig, queue: JobQueue, stop: threading.Event) -> None:
        self.cfg, self.queue, self.stop = cfg, queue, stop

    def send(self, d: Delivery) -> None:
        try:
            error = c_store(d.rtstruct, d.destination, self.cfg.ae_title)
        except Exception as exc:  # an unreadable outbox file or a network library error: retried like a refusal
            error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        if error is None:
            finished = self.queue.delivered(d.id)
            event(logging.INFO, "rtstruct delivered", job=d.job_id, series=d.series_ref, destination=d.destination,
                  attempt=d.attempts + 1, job_done=finished)
            return
        wait = backoff(d.attempts, self.cfg.retry_initial_s, self.cfg.retry_max_s)
        self.queue.retry_later(d.id, error, wait)
        event(logging.WARNING, "delivery failed, will retry", job=d.job_id, series=d.series_ref,
              destination=d.destination, attempt=d.attempts + 1, retry_in_s=round(wait, 1), reason=error)

    def run(self, poll_s: float = 0.2) -> None:
        while not self.stop.is_set():
            try:
                due = self.queue.due_deliveries()
                for d in due:
                    if self.stop.is_set():
                        break
                    self.send(d)
            except Exception:  # keep delivering; the queue still holds every pending delivery
                logging.getLogger("rtseg.serve").exception("sender loop error")
                due = []
            if not due:
                self.stop.wait(poll_s)
