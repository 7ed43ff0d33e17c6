"""Delivery: each job's outputs to each of its destinations, retrying with exponential back-off.

The destination's kind (``serve.destinations``: C-STORE, folder, ...) does the sending. A
delivery is never given up: a destination that is down keeps its jobs in ``sending`` and gets
them when it comes back. It is marked sent only after the destination answered success, so a
crash in between sends the same files (same SOP Instance UIDs) once more, which a PACS or TPS
stores once.
"""
from __future__ import annotations

import logging
import threading

from rtseg.serve.config import ServeConfig
from rtseg.serve.destinations import parse_destination, split_outputs
from rtseg.serve.jobs import Delivery, JobQueue
from rtseg.serve.logs import event


def backoff(attempts: int, initial_s: float, max_s: float) -> float:
    """Wait before attempt ``attempts + 1``: initial, 2x, 4x ... capped."""
    return float(min(max_s, initial_s * 2 ** max(0, attempts)))


class Sender:
    """One thread that delivers whatever is due, oldest first."""

    def __init__(self, cfg: ServeConfig, queue: JobQueue, stop: threading.Event) -> None:
        self.cfg, self.queue, self.stop = cfg, queue, stop

    def send(self, d: Delivery) -> None:
        try:
            error = parse_destination(d.destination).send(split_outputs(d.rtstruct), self.cfg.ae_title)
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
