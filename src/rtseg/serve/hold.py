"""A person's decision on a job the QA gate held: ``rtseg serve release JOB`` / ``rtseg serve reject JOB``.

Runs beside the node (its own connection to the job database, which is SQLite in WAL mode) and
appends the decision to the node's event log, with who decided (``--by NAME``, else the operating
system user) and when. A released job's deliveries start at once: the node's sender sends the
outputs written at contouring time, whose RTSTRUCT already carries the QA flags
(StructureSetDescription, ROIObservationDescription). A rejected job's outputs are kept in the
outbox for the record and never sent.
"""
from __future__ import annotations

import getpass
import logging
import os
from pathlib import Path
from typing import Any, Optional

from rtseg.errors import ConfigError
from rtseg.serve.jobs import JobQueue
from rtseg.serve.logs import event, log, setup_logging
from rtseg.serve.service import DB_NAME, LOG_NAME


def reviewer(by: Optional[str]) -> str:
    """Who decides: ``--by NAME`` or the operating system user."""
    if by is not None and by.strip():
        return by.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment (a container without passwd entry)
        return f"uid {os.getuid()}"


def review_job(store: str | Path, job_id: int, release: bool, by: Optional[str] = None) -> dict[str, Any]:
    """Release or reject held job ``job_id`` of the node whose store is ``store``; returns the job row."""
    db = Path(store) / DB_NAME
    if not db.is_file():
        raise ConfigError(f"{db}: no job database (is --store the node's store folder?)")
    who = reviewer(by)
    q = JobQueue(db)
    try:
        job = q.review(job_id, who, release)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        q.close()
    path = (Path(store) / LOG_NAME).resolve()
    logged = any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path for h in log.handlers)
    handlers = [] if logged else setup_logging(path, to_stderr=False)  # the node in this process logs there already
    try:
        event(logging.INFO, "job released" if release else "job rejected", job=job_id, series=job["series_ref"],
              by=who, state=job["state"])
    finally:
        for h in handlers:
            log.removeHandler(h)
            h.close()
    return job
