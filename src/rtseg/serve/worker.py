"""Contouring workers: each takes the oldest complete job, contours it, queues its deliveries.

A worker loads each checkpoint it needs once and keeps it; a job's outputs (its rule's formats,
``<outbox_prefix><suffix>`` in the outbox, plus the contour QA) are kept in the queue as one value. A failing series
(the DICOM reader's gap/tilt/size/modality checks, a series of 1 or 2 slices, a prediction with no
organ, a broken checkpoint) fails its job with the reason; the worker goes on with the next. A job
the QA gate holds keeps its outputs in the outbox and its deliveries waiting (``held``) until
``rtseg serve release`` / ``reject``.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from rtseg.errors import RtsegError
from rtseg.io.naming import outbox_prefix
from rtseg.serve.assembly import SeriesStore
from rtseg.serve.config import Rule, ServeConfig
from rtseg.serve.adapt_route import route_contour
from rtseg.serve.contour import Contourer
from rtseg.serve.destinations import join_outputs
from rtseg.serve.jobs import JobQueue
from rtseg.serve.logs import event, short_hash
from rtseg.serve.routing import resolve_destinations


class Worker:
    def __init__(self, cfg: ServeConfig, queue: JobQueue, store: SeriesStore, stop: threading.Event,
                 make_contourer: Callable[[str, str, str], Contourer] = Contourer) -> None:
        self.cfg, self.queue, self.store, self.stop = cfg, queue, store, stop
        self.outbox = cfg.store_path / "outbox"
        self.outbox.mkdir(parents=True, exist_ok=True)
        self._make = make_contourer
        self._models: dict[str, Contourer] = {}
        self._rules = {r.name: r for r in cfg.effective_rules()}

    def contourer(self, checkpoint: str) -> Contourer:
        if checkpoint not in self._models:
            t0 = time.perf_counter()
            self._models[checkpoint] = self._make(checkpoint, self.cfg.device, self.cfg.precision)
            event(logging.INFO, "model loaded", checkpoint=Path(checkpoint).name,
                  seconds=round(time.perf_counter() - t0, 2))
        return self._models[checkpoint]

    def prepare(self, rule: Rule) -> None:
        """Load the rule's model and resolve its outputs (a bad checkpoint or ROI mapping fails at start-up)."""
        self.contourer(rule.checkpoint).prepare(rule.formats, rule.roi_names, self.cfg.qa_policy)

    def process(self, job: dict) -> None:
        jid, ref = int(job["id"]), job["series_ref"]
        rule: Rule | None = self._rules.get(job["rule"])
        if rule is None:  # the config changed between runs: the rule that matched is gone
            self.queue.set_final(jid, "failed", f"routing rule {job['rule']!r} no longer exists in the config")
            return
        name = outbox_prefix(jid, short_hash(job["series_uid"]))
        event(logging.INFO, "contouring", job=jid, series=ref, rule=rule.name)
        try:
            done = route_contour(self.contourer(job["checkpoint"]), self.cfg.adapt_patients,  # adapt or population
                                 self.store.series_dir(job["series_uid"]), self.outbox, name, rule.formats,
                                 rule.roi_names, self.cfg.qa_policy)
        except RtsegError as exc:
            self.queue.set_final(jid, "failed", str(exc))
            event(logging.ERROR, "contouring failed", job=jid, series=ref, reason=str(exc))
            return
        except Exception as exc:  # a bug or a broken file must not stop the node; the job keeps the reason
            msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            self.queue.set_final(jid, "failed", msg)
            event(logging.ERROR, "contouring failed", job=jid, series=ref, reason=msg)
            logging.getLogger("rtseg.serve").debug("traceback", exc_info=True)
            return
        dests = resolve_destinations(rule, job["calling_ae"], job["peer_host"], self.cfg.caller_port)
        outputs = join_outputs(done.outputs)  # the queue's one path column holds them all
        verdict = done.verdict
        qa = {**verdict.to_dict(), "flags": [dict(f) for f in verdict.flags]}
        self.queue.contoured(jid, outputs, done.seconds, [str(d) for d in dests],  # type: ignore[arg-type]
                             model=done.model, qa=qa, hold=verdict.held)
        event(logging.INFO, "contoured", job=jid, series=ref, **{f"{k}_s": round(v, 3) for k, v in done.seconds.items()},
              outputs=[p.name for p in done.outputs], qa_flags=done.qa["n_flags"], qa=done.qa["flags"],
              destinations=[str(d) for d in dests], model=done.model, qa_gate=verdict.action)
        if verdict.held:
            event(logging.WARNING, "held for review", job=jid, series=ref, reasons=list(verdict.reasons),
                  hint=f"rtseg serve release {jid} / rtseg serve reject {jid}")

    def run(self, poll_s: float = 0.2) -> None:
        while not self.stop.is_set():
            try:
                job = self.queue.claim()
                if job is not None:
                    self.process(dict(job))
            except Exception:  # e.g. the disk is full: keep the thread alive, the job stays claimed until restart
                logging.getLogger("rtseg.serve").exception("worker loop error")
                job = None
            if job is None:
                self.stop.wait(poll_s)
