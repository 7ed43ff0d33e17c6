"""Shared pieces of the ``rtseg serve`` tests: real dcmtk tools, the node in-process or as a process,
series copies with new UIDs. (No tests here.)"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pydicom
import pytest
from pydicom.uid import generate_uid

from rtseg.serve.scp import free_port

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT.parent / "shared" / "data" / "dicom-ct-series"
PYTHON = sys.executable


def stop_process(proc: Optional[subprocess.Popen], timeout: float = 20) -> Optional[int]:
    """SIGTERM, then SIGKILL if it does not end within ``timeout``; returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def need_tools(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (dcmtk/Orthanc are needed for the DICOM node tests)")


def shared_series() -> Path:
    if not SERIES.is_dir():
        pytest.skip(f"{SERIES} not found (../shared/data is absent)")
    return SERIES


def wait_for(cond: Callable[[], object], timeout: float, what: str, poll: float = 0.1) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def copy_series(src: Path, dst: Path, modality: Optional[str] = None, sop_class: Optional[str] = None,
                only: Optional[Sequence[int]] = None) -> Path:
    """The series with new Study/Series/SOP (and frame of reference) UIDs, optionally another modality/class."""
    dst.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k, f in enumerate(sorted(src.glob("*.dcm"))):
        if only is not None and k not in only:
            continue
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        if modality:
            ds.Modality = modality
        if sop_class:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.save_as(dst / f.name, enforce_file_format=True)
    return dst


def storescu(port: int, files: Sequence[Path] | Path, calling: str = "SCANNER1", called: str = "RTSEG",
             check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """dcmtk storescu proposing JPEG 2000 lossless (``-xv``, the shared series' syntax) and the uncompressed ones,
    only for the SOP classes of the files sent (``-R``)."""
    paths = [str(files)] if isinstance(files, Path) else [str(f) for f in files]
    cmd = ["storescu", "-v", "-xv", "-R", "-aet", calling, "-aec", called, "+sd", "127.0.0.1", str(port), *paths]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"storescu failed: {res.stdout}{res.stderr}"
    return res


class StoreSCP:
    """dcmtk storescp as the TPS: every received object gets its own file (so a second delivery shows)."""

    def __init__(self, folder: Path, ae_title: str = "TPS", port: Optional[int] = None) -> None:
        self.folder, self.ae_title = folder, ae_title
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> "StoreSCP":
        self.proc = subprocess.Popen(["storescp", "-aet", self.ae_title, "-od", str(self.folder), "-uf",
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["echoscu", "-aec", self.ae_title, "127.0.0.1", str(self.port)],
                                        capture_output=True).returncode == 0, 20, "storescp to listen")
        return self

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.proc = None

    def received(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(p) for p in sorted(self.folder.iterdir()) if p.is_file() and not p.name.startswith(".")]


class NodeProcess:
    """``python -m rtseg serve`` as a separate process (to kill -9 and restart it)."""

    def __init__(self, store: Path, args: Sequence[str], port: Optional[int] = None) -> None:
        self.store, self.args = store, list(args)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 120) -> "NodeProcess":
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
        cmd = [PYTHON, "-m", "rtseg", "serve", "--store", str(self.store), "--port", str(self.port), *self.args]
        self.stderr = open(self.store.parent / f"{self.store.name}.stderr", "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=self.stderr)
        wait_for(lambda: self.proc.poll() is not None or echo(self.port), timeout, "rtseg serve to listen")
        assert self.proc.poll() is None, f"rtseg serve exited with {self.proc.returncode}"
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> Optional[int]:
        if self.proc is None:
            return None
        rc = stop_process(self.proc, 60)
        self.stderr.close()
        self.proc = None
        return rc


def echo(port: int, calling: str = "SCANNER1") -> bool:
    return subprocess.run(["echoscu", "-aet", calling, "-aec", "RTSEG", "127.0.0.1", str(port)],
                          capture_output=True).returncode == 0


def job_states(store: Path) -> list[tuple[int, str, str]]:
    """(id, state, error) of every job, read straight from the node's database."""
    db = store / "jobs.sqlite"
    if not db.is_file():
        return []
    con = sqlite3.connect(str(db), timeout=10)
    try:
        return [(r[0], r[1], r[2] or "") for r in con.execute("SELECT id, state, error FROM jobs ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


@pytest.fixture
def processes() -> Iterator[list]:
    """Everything with a ``stop()`` put in this list is stopped after the test, whatever happened."""
    started: list = []
    yield started
    for p in reversed(started):
        p.stop()
