"""JSON-lines event log of the node. Series are named by number and a short hash of their UID,
never by patient name or ID (those never reach the queue or the log)."""
from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("rtseg.serve")


def short_hash(uid: str) -> str:
    """8 hex digits of SHA-256: enough to tell series apart in a log, useless to find a patient."""
    return hashlib.sha256(uid.encode()).hexdigest()[:8]


def series_ref(series_uid: str, series_number: Any = None) -> str:
    """``S3#1a2b3c4d``: series number (``S?`` when absent) and the UID's short hash."""
    number = str(series_number).strip() if series_number not in (None, "") else "?"
    return f"S{number}#{short_hash(series_uid)}"


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, event, and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info and record.levelno >= logging.ERROR:
            out["exception"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out, default=str)


def event(level: int, name: str, **fields: Any) -> None:
    """Log one event with structured fields (pass ``series=series_ref(...)``, never patient data)."""
    log.log(level, name, extra={"fields": fields})


def setup_logging(log_file: Optional[Path], to_stderr: bool = True) -> list[logging.Handler]:
    """JSON lines to ``log_file`` (appended) and to stderr; returns the handlers (to remove in tests)."""
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    if to_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(JsonLines())
        log.addHandler(h)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handlers
