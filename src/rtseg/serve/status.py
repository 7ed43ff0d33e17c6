"""``rtseg serve status``: the jobs, their state and timings, read from the queue (works while the node runs)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from rtseg.errors import ConfigError
from rtseg.serve.jobs import JobQueue

COLUMNS = ("job", "series", "state", "instances", "received", "latency_s", "detail")


def _fmt_time(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def latency(job: dict[str, Any]) -> Optional[float]:
    """Last instance received -> RTSTRUCT delivered (or contoured, with no destination)."""
    if job["delivered_at"] and job["last_received_at"]:
        return float(job["delivered_at"] - job["last_received_at"])
    return None


def job_rows(store: str | Path, limit: Optional[int] = None) -> list[dict[str, Any]]:
    db = Path(store) / "jobs.sqlite"
    if not db.is_file():
        raise ConfigError(f"{db}: no job database (is --store the node's store folder?)")
    q = JobQueue(db)
    try:
        jobs = q.jobs(limit)
    finally:
        q.close()
    for j in jobs:
        j["timings"] = json.loads(j["timings"]) if j["timings"] else {}
        j["latency_s"] = latency(j)
    return jobs


def _detail(j: dict[str, Any]) -> str:
    if j["error"]:
        return j["error"]
    if j["interrupted"]:
        return f"interrupted: {j['interrupted']} (waiting for the sender to send the series again)"
    pending = [d for d in j["deliveries"] if d["state"] != "sent"]
    if pending:
        d = pending[0]
        return f"to {d['destination']}: {d['attempts']} attempt(s)" + (f", last: {d['last_error']}" if d["last_error"] else "")
    if j["timings"]:
        return ", ".join(f"{k} {v:.1f} s" for k, v in j["timings"].items())
    return ""


def format_table(jobs: list[dict[str, Any]]) -> str:
    rows = [COLUMNS] + [(str(j["id"]), j["series_ref"], j["state"], str(j["n_instances"]),
                         _fmt_time(j["first_received_at"]),
                         f"{j['latency_s']:.1f}" if j["latency_s"] is not None else "-", _detail(j)) for j in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)
