"""``rtseg serve status``: the jobs, their state and timings, read from the queue (works while the node runs).

``--json`` gives one object per job: its outputs as one key per output (``rtstruct``, ``seg``, ``qa``, ...: a path
each), the model that made them, and the QA gate's verdict with every flag as a list (``qa``)."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from rtseg.errors import ConfigError
from rtseg.inference.outputs import output_names, resolve_formats
from rtseg.io.naming import QA_SUFFIX
from rtseg.serve.destinations import split_outputs
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
        j["qa"] = json.loads(j["qa"]) if j.get("qa") else None
        j["outputs"] = output_kinds(j.pop("rtstruct", None) or "")
    return jobs


def output_kinds(joined: str) -> dict[str, str]:
    """The queue's one outputs column as one key per output: format name (or ``qa``) -> path."""
    suffixes = [(f.suffix, f.name) for f in resolve_formats(output_names())] + [(QA_SUFFIX, "qa")]
    out: dict[str, str] = {}
    for path in split_outputs(joined):
        kind = next((n for suffix, n in sorted(suffixes, key=lambda x: -len(x[0])) if path.name.endswith(suffix)),
                    path.name)
        out[kind] = str(path)
    return out


def _detail(j: dict[str, Any]) -> str:
    if j["state"] == "held" and j["qa"]:
        return (f"held by the QA gate ({j['qa']['policy']}): {'; '.join(j['qa']['reasons'])} -> rtseg serve release "
                f"{j['id']} / reject {j['id']}")
    if j["error"]:
        return j["error"] + (f" at {_fmt_time(j['reviewed_at'])}" if j.get("reviewed_at") else "")
    if j.get("reviewed_by"):
        return f"released by {j['reviewed_by']} at {_fmt_time(j['reviewed_at'])}"
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
