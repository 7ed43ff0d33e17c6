"""Series assembly: instances land on disk atomically, one folder per series; a series is complete
when nothing new arrived for ``series_timeout`` seconds (or when its sender released the
association, if so configured). A series whose sender did not finish (association aborted,
instances refused, rtseg killed meanwhile) is reported incomplete, naming what is missing, and is
not contoured until it is sent again in full.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path
import numpy as np

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.dicom.series import scan_dicom_folder
from rtseg.serve.config import ServeConfig
from rtseg.serve.jobs import JobQueue
from rtseg.serve.logs import event
from rtseg.serve.models import promoted_checkpoint
from rtseg.serve.routing import SeriesAttributes, route


class SeriesStore:
    """``STORE/series/<hash of Series UID>/<hash of SOP UID>.dcm``: names that tell nothing about the patient."""

    def __init__(self, root: Path) -> None:
        self.root = root / "series"
        self.root.mkdir(parents=True, exist_ok=True)

    def series_dir(self, series_uid: str) -> Path:
        return self.root / short_hash_long(series_uid)

    def instance_path(self, series_uid: str, sop_uid: str) -> Path:
        return self.series_dir(series_uid) / f"{short_hash_long(sop_uid)}.dcm"

    def write(self, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance atomically (a reader never sees half a file) and durably."""
        target = self.instance_path(series_uid, sop_uid)
        with atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        return target


def short_hash_long(uid: str) -> str:
    """32 hex digits: collision-free for file names, still no patient information."""
    return hashlib.sha256(uid.encode()).hexdigest()[:32]


def _runs(numbers: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3, 7, 9-10'."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(f"{start}" if start == n else f"{start}-{n}")
            start = None
    return ", ".join(out)


def describe_received(folder: Path) -> str:
    """What arrived of a partial series, naming the missing slices where the positions show a gap."""
    try:
        headers = [ds for _, ds in scan_dicom_folder(folder)]
    except DataError as exc:
        return str(exc)
    if not headers:
        return "no instance stored"
    numbers = sorted({int(ds.InstanceNumber) for ds in headers if ds.get("InstanceNumber") not in (None, "")})
    parts = [f"{len(headers)} instance(s) received"]
    if numbers:
        parts.append(f"InstanceNumber {_runs(numbers)}")
        missing = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        if missing:
            parts.append(f"missing InstanceNumber {_runs(missing)}")
    try:
        iop = np.array([float(v) for v in headers[0].ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        z = np.sort([float(np.dot(np.array([float(v) for v in ds.ImagePositionPatient]), normal)) for ds in headers])
    except (AttributeError, ValueError, TypeError):
        return "; ".join(parts)
    if len(z) > 2:
        d = np.diff(z)
        dz = float(np.median(d))
        gaps = [f"{z[i] + dz:.1f}..{z[i + 1] - dz:.1f} mm ({int(round(d[i] / dz)) - 1} slice(s))"
                for i in np.flatnonzero(d > 1.5 * dz)] if dz > 0 else []
        if gaps:
            parts.append("missing slices at " + ", ".join(gaps) + " along the slice normal")
        parts.append(f"slices span {z[0]:.1f}..{z[-1]:.1f} mm")
    return "; ".join(parts)


def complete_due(queue: JobQueue, store: SeriesStore, cfg: ServeConfig) -> list[int]:
    """One pass: due series become complete (routed), unrouted, or failed as incomplete."""
    done = []
    for job in queue.due(cfg.series_timeout, cfg.complete_on_release):
        _finish_receiving(queue, store, cfg, job)
        done.append(int(job["id"]))
    return done


def _finish_receiving(queue: JobQueue, store: SeriesStore, cfg: ServeConfig, job: sqlite3.Row) -> None:
    jid, ref = int(job["id"]), job["series_ref"]
    if job["interrupted"]:
        reason = f"incomplete series: {job['interrupted']}; {describe_received(store.series_dir(job['series_uid']))}; " \
                 "not contoured (send the whole series again)"
        queue.set_final(jid, "failed", reason)
        event(logging.WARNING, "series incomplete", job=jid, series=ref, reason=reason)
        return
    problems = queue.problems(jid)
    if problems:
        numbers = ", ".join(n or "?" for n, _ in problems[:10]) + (", ..." if len(problems) > 10 else "")
        reason = (f"damaged series: {len(problems)} of {int(job['n_instances'])} instance(s) cannot be contoured "
                  f"(InstanceNumber {numbers}): {problems[0][1]}; not contoured")
        queue.set_final(jid, "failed", reason)
        event(logging.WARNING, "series damaged", job=jid, series=ref, reason=reason)
        return
    attrs = SeriesAttributes(job["calling_ae"], job["modality"], job["body_part"], job["series_description"])
    rule = route(cfg.effective_rules(), attrs)
    if rule is None:
        reason = (f"no routing rule matches (calling AE {attrs.calling_ae}, modality {attrs.modality or '?'}, "
                  f"body part {attrs.body_part or '?'}); series kept in the store, not contoured")
        queue.set_final(jid, "unrouted", reason)
        event(logging.WARNING, "series unrouted", job=jid, series=ref, reason=reason)
        return
    queue.set_complete(jid, rule.name, promoted_checkpoint(queue.path, rule.name) or rule.checkpoint)
    event(logging.INFO, "series complete", job=jid, series=ref, instances=int(job["n_instances"]), rule=rule.name)
