"""``rtseg serve`` under faults: kill -9 while receiving, contouring and sending, a destination that is down
for a while, an association aborted mid-series, SIGTERM. Every series is contoured once and delivered once."""
from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, JPEG2000Lossless
from pynetdicom import AE

from test_serve import ckpt, node_factory, tps  # noqa: F401  (fixtures)
from test_serve_support import NodeProcess, StoreSCP, job_states, need_tools, processes, shared_series, storescu, wait_for
from rtseg.serve.scp import free_port

__all__ = ["processes", "node_factory", "ckpt", "tps"]


def send_some(port: int, files: list[Path], abort: bool) -> AE:
    """Store ``files`` over one pynetdicom association, then abort it (or leave it open if not ``abort``)."""
    ae = AE(ae_title="SCANNER1")
    ae.add_requested_context(CTImageStorage, [JPEG2000Lossless])
    assoc = ae.associate("127.0.0.1", port, ae_title="RTSEG")
    assert assoc.is_established
    for f in files:
        assert assoc.send_c_store(pydicom.dcmread(f)).Status == 0x0000
    if abort:
        assoc.abort()
    return assoc


def node_args(ckpt_path: Path, destination: str) -> list[str]:
    return ["--checkpoint", str(ckpt_path), "--destination", destination, "--allow", "SCANNER1", "--device", "cpu",
            "--series-timeout", "1", "--retry-initial-s", "0.5", "--retry-max-s", "1"]


def tps_and_node(tmp_path: Path, ckpt_path: Path, processes: list, tps_up: bool = True) -> tuple[StoreSCP, NodeProcess]:
    """storescp as the TPS (``tps_up=False``: its port chosen but nothing listening yet) and the node as a process."""
    need_tools("storescu", "storescp", "echoscu")
    tps_ = StoreSCP(tmp_path / "tps", port=free_port())
    processes.append(tps_)
    if tps_up:
        tps_.start()
    node = NodeProcess(tmp_path / "store", node_args(ckpt_path, tps_.destination))
    processes.append(node)
    return tps_, node.start()


def states(store: Path) -> list[str]:
    return [s for _, s, _ in job_states(store)]


def deliveries(store: Path) -> list[tuple[str, int]]:
    con = sqlite3.connect(str(store / "jobs.sqlite"), timeout=10)
    try:
        return [(r[0], r[1]) for r in con.execute("SELECT state, attempts FROM deliveries ORDER BY id")]
    finally:
        con.close()


def test_aborted_association_reports_the_partial_series_and_names_missing_slices(node_factory, tps) -> None:
    series = sorted(shared_series().glob("*.dcm"))
    node = node_factory(destination=[tps.destination])
    send_some(node.port, series[:5] + series[8:12], abort=True)  # InstanceNumber 267-271, 275-278
    jobs = wait_for(lambda: [j for j in node.states() if j[1] == "failed"], 30, "the partial series to fail")
    reason = jobs[0][2]
    assert "incomplete" in reason and "aborted" in reason and "not contoured" in reason
    assert "9 instance(s) received" in reason and "missing InstanceNumber 272-274" in reason
    assert "missing slices at -780.5..-776.5 mm (3 slice(s))" in reason
    time.sleep(1.5)
    assert tps.received() == [] and not list((node.cfg.store_path / "outbox").glob("*.dcm"))
    # the sender tries again with the whole series: contoured and delivered, once
    storescu(node.port, shared_series())
    wait_for(lambda: "done" in [s for _, s, _ in node.states()], 120, "the resent series to be done")
    assert [s for _, s, _ in node.states()] == ["failed", "done"] and len(tps.received()) == 1


@pytest.mark.slow
def test_kill9_while_receiving_then_restart_and_resend(tmp_path: Path, ckpt: Path, processes: list) -> None:
    files = sorted(shared_series().glob("*.dcm"))
    tps_, node = tps_and_node(tmp_path, ckpt, processes)
    store = node.store
    send_some(node.port, files[:10], abort=False)
    node.kill9()
    assert states(store) == ["received"]
    node.start()
    wait_for(lambda: states(store) == ["failed"], 30, "the interrupted series to be reported incomplete")
    assert "rtseg stopped while the series was being received" in job_states(store)[0][2]
    storescu(node.port, shared_series())  # the sender's retry
    wait_for(lambda: states(store) == ["failed", "done"], 120, "the resent series to be done")
    assert len(tps_.received()) == 1
    assert len(list((store / "series").rglob("*.dcm"))) == len(files)  # each instance stored once


@pytest.mark.slow
def test_kill9_while_contouring_resumes_and_delivers_once(tmp_path: Path, ckpt: Path, processes: list) -> None:
    tps_, node = tps_and_node(tmp_path, ckpt, processes)
    store = node.store
    storescu(node.port, shared_series())
    wait_for(lambda: states(store) == ["contouring"], 60, "contouring to start", poll=0.02)
    node.kill9()
    assert states(store) == ["contouring"] and tps_.received() == []
    node.start()
    wait_for(lambda: states(store) == ["done"], 120, "the job to be done after the restart")
    time.sleep(1.0)
    assert len(tps_.received()) == 1
    assert len(list((store / "outbox").glob("*.dcm"))) == 1


@pytest.mark.slow
def test_kill9_while_sending_to_a_destination_that_is_down_then_up(tmp_path: Path, ckpt: Path, processes: list) -> None:
    tps_, node = tps_and_node(tmp_path, ckpt, processes, tps_up=False)  # the TPS is down
    store = node.store
    storescu(node.port, shared_series())
    wait_for(lambda: states(store) == ["sending"] and deliveries(store)[0][1] >= 2, 120, "failed sending attempts")
    node.kill9()
    node.start()
    time.sleep(1.5)
    assert states(store) == ["sending"]
    tps_.start()  # the TPS comes back
    wait_for(lambda: states(store) == ["done"], 60, "delivery once the destination is up")
    time.sleep(1.5)
    assert len(tps_.received()) == 1 and deliveries(store)[0][0] == "sent"


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_queue_resumes(tmp_path: Path, ckpt: Path, processes: list) -> None:
    tps_, node = tps_and_node(tmp_path, ckpt, processes)
    store = node.store
    storescu(node.port, shared_series())
    wait_for(lambda: states(store) in (["complete"], ["contouring"]), 60, "the series to be complete", poll=0.02)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(120) == 0
    assert states(store)[0] in ("complete", "sending", "done")  # the worker finished its series, or never began
    assert "stopped" in (store / "serve.log.jsonl").read_text()
    node.start()
    wait_for(lambda: states(store) == ["done"], 120, "the job to be done after the restart")
    assert len(tps_.received()) == 1

