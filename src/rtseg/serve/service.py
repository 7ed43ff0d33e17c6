"""The node: SCP + series assembly + workers + sender around one job queue, and a clean stop.

Threads, not processes: receiving is I/O, inference runs in torch (which
releases the GIL), and one process keeps one queue connection and one log.
SIGTERM/SIGINT: stop accepting, finish the instance being received, let each
worker finish its series, stop; the queue is consistent at every step anyway
(``kill -9`` is handled by :meth:`JobQueue.recover` on the next start).
"""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from rtseg.serve.assembly import SeriesStore, complete_due
from rtseg.serve.config import ServeConfig
from rtseg.serve.contour import Contourer
from rtseg.serve.feedback import Feedback
from rtseg.serve.feedback_loop import FeedbackLoop
from rtseg.serve.jobs import JobQueue
from rtseg.serve.logs import event, setup_logging
from rtseg.serve.scp import StorageSCP
from rtseg.serve.sender import Sender
from rtseg.serve.worker import Worker

DB_NAME = "jobs.sqlite"
LOG_NAME = "serve.log.jsonl"


def queue_path(store: str | Path) -> Path:
    return Path(store) / DB_NAME


class Node:
    def __init__(self, cfg: ServeConfig, make_contourer: Callable[[str, str, str], Contourer] = Contourer) -> None:
        self.cfg = cfg
        root = cfg.store_path
        root.mkdir(parents=True, exist_ok=True)
        self.queue = JobQueue(queue_path(root))
        self.store = SeriesStore(root)
        self.stop_event = threading.Event()
        self.scp = StorageSCP(cfg, self.queue, self.store)
        self.workers = [Worker(cfg, self.queue, self.store, self.stop_event, make_contourer) for _ in range(cfg.workers)]
        self.sender = Sender(cfg, self.queue, self.stop_event)
        self.feedback = Feedback(root, queue_path(root), cfg.max_instance_mb * 1e6)
        self.scp.feedback = self.feedback
        self.feedback_loop = FeedbackLoop(cfg, self.feedback, self.store.series_dir, self.stop_event)
        self._threads: list[threading.Thread] = []
        self.address: Optional[tuple[str, int]] = None

    def start(self) -> tuple[str, int]:
        recovered = self.queue.recover()
        if any(recovered.values()):
            event(logging.INFO, "resuming unfinished jobs", **recovered)
        for w in self.workers:  # load every model before listening: a bad checkpoint is a startup error
            for rule in self.cfg.effective_rules():
                w.prepare(rule)
        self.address = self.scp.start()
        loops: list[tuple[str, Callable[[], Any]]] = [("rtseg-assembly", self._assemble), ("rtseg-sender", self.sender.run),
                                                  ("rtseg-feedback", self.feedback_loop.run)]
        loops += [(f"rtseg-worker-{i}", w.run) for i, w in enumerate(self.workers)]
        for name, fn in loops:
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        event(logging.INFO, "listening", ae_title=self.cfg.ae_title, host=self.address[0], port=self.address[1],
              workers=len(self.workers), tls=self.cfg.tls_cert is not None,
              allow=self.cfg.allow or "any calling AE title")
        if not self.cfg.allow:
            event(logging.WARNING, "no allow list: any calling AE title may store here (set --allow)")
        return self.address

    def _assemble(self, poll_s: float = 0.2) -> None:
        while not self.stop_event.is_set():
            try:
                complete_due(self.queue, self.store, self.cfg)
            except Exception:  # keep assembling; the next pass retries
                logging.getLogger("rtseg.serve").exception("series assembly pass failed")
            self.stop_event.wait(min(poll_s, self.cfg.series_timeout / 4))

    def stop(self, wait_s: float = 600.0) -> None:
        self.scp.stop()
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=wait_s)
        self.queue.close()
        self.feedback.close()
        event(logging.INFO, "stopped")

    def serve_forever(self) -> None:
        """Run until SIGTERM or SIGINT."""
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            event(logging.INFO, "stopping", signal=signal.Signals(signum).name)
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            try:
                self.start()
            except BaseException:  # e.g. a checkpoint that does not load: nothing was started
                self.queue.close()
                self.feedback.close()
                raise
            try:
                while not stop.wait(0.5):
                    pass
            finally:
                self.stop()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def run_node(cfg: ServeConfig, log_to_stderr: bool = True) -> None:
    handlers = setup_logging(cfg.store_path / LOG_NAME, to_stderr=log_to_stderr)
    try:
        Node(cfg).serve_forever()
    finally:
        for h in handlers:
            logging.getLogger("rtseg.serve").removeHandler(h)
            h.close()
