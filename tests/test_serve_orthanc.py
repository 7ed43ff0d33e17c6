"""Orthanc as the PACS: it pushes 10 CT series to the node (REST ``/modalities/rtseg/store``, one job per series)
and gets 10 RTSTRUCTs back, each in the study of its CT and referencing that series. ``round_trip`` is also what
benchmarks/serve_orthanc.py times."""
from __future__ import annotations

import json
import sqlite3
from io import BytesIO
import time
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
import pytest

from rtseg.serve.scp import free_port
from test_serve import ckpt, node_factory, tps  # noqa: F401  (fixtures)
from test_serve_load import Orthanc
from test_serve_support import copy_series, need_tools, processes, shared_series, wait_for

__all__ = ["processes", "node_factory", "ckpt", "tps"]


def referenced_series(orthanc: Orthanc, instance: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{orthanc.http}/instances/{instance}/file", timeout=30) as r:
        ds = pydicom.dcmread(BytesIO(r.read()))
    assert ds.Modality == "RTSTRUCT"
    ref = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    return str(ref.SeriesInstanceUID)


def round_trip(orthanc: Orthanc, copies: list[Path], timeout: float = 600) -> dict[str, Any]:
    """Upload the series to Orthanc, push each to the node, wait for every RTSTRUCT to come back.

    Returns the Orthanc series ids (CT -> its RTSTRUCT instances) and the wall-clock figures: push start,
    each RTSTRUCT's arrival (as polled, 0.2 s resolution)."""
    ct_series: list[str] = []
    for c in copies:
        sid = None
        for f in sorted(c.glob("*.dcm")):
            sid = orthanc.post("/instances", f.read_bytes())["ParentSeries"]
        ct_series.append(str(sid))
    study_of = {s: orthanc.get(f"/series/{s}")["ParentStudy"] for s in ct_series}
    t0 = time.time()
    for s in ct_series:  # as a PACS forwards series as they come: one asynchronous store job each
        orthanc.post("/modalities/rtseg/store", json.dumps({"Resources": [s], "Asynchronous": True}).encode())
    arrived: dict[str, float] = {}
    rtstructs: dict[str, list[str]] = {}
    end = time.monotonic() + timeout
    while len(arrived) < len(ct_series) and time.monotonic() < end:
        for s in ct_series:
            if s in arrived:
                continue
            rt = [x for x in orthanc.get(f"/studies/{study_of[s]}/series")
                  if x["MainDicomTags"].get("Modality") == "RTSTRUCT"]
            if rt:
                arrived[s] = time.time()
                rtstructs[s] = [i for x in rt for i in x["Instances"]]
        time.sleep(0.2)
    return {"ct_series": ct_series, "rtstructs": rtstructs, "push_at": t0, "arrived": arrived}


def node_latencies(store: Path) -> list[dict[str, float]]:
    """Per job: receive (first -> last instance), latency (last instance -> delivered), delivered_at."""
    con = sqlite3.connect(str(store / "jobs.sqlite"))
    try:
        rows = con.execute("SELECT first_received_at, last_received_at, delivered_at, state FROM jobs ORDER BY id")
        return [{"receive": r[1] - r[0], "latency": r[2] - r[1], "delivered_at": r[2]} for r in rows if r[3] == "done"]
    finally:
        con.close()


@pytest.mark.slow
def test_orthanc_pushes_ten_series_and_gets_ten_rtstructs_back(node_factory, tmp_path: Path, processes: list) -> None:
    need_tools("Orthanc")
    src = shared_series()
    copies = [copy_series(src, tmp_path / f"s{i:02d}") for i in range(10)]
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", port)
    processes.append(orthanc)
    orthanc.start()
    node = node_factory(port=port, destination=[f"ORTHANC@127.0.0.1:{orthanc.dicom}"], allow=["ORTHANC"], workers=2,
                        complete_on_release=True, series_timeout=15)  # a loaded machine may pause Orthanc for seconds
    run = round_trip(orthanc, copies)
    assert len(run["arrived"]) == 10, f"{len(run['arrived'])} of 10 RTSTRUCTs came back; jobs: {node.states()}"
    wait_for(lambda: [s for _, s, _ in node.states()] == ["done"] * 10, 30, "all 10 jobs to be done")
    time.sleep(1.0)  # a second delivery would show by now
    for s in run["ct_series"]:
        instances = [x for x in orthanc.get(f"/studies/{orthanc.get(f'/series/{s}')['ParentStudy']}/series")
                     if x["MainDicomTags"].get("Modality") == "RTSTRUCT"][0]["Instances"]
        assert len(instances) == 1  # exactly once
        assert referenced_series(orthanc, instances[0]) == orthanc.get(f"/series/{s}")["MainDicomTags"]["SeriesInstanceUID"]
    assert len(node_latencies(node.cfg.store_path)) == 10
