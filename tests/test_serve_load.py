"""``rtseg serve`` under load (10 series from 10 storescu processes at once) and with Orthanc as the PACS."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pydicom
import pytest

from dicom_checks import assert_dciodvfy_clean
from rtseg.serve.scp import free_port
from test_serve import ckpt, node_factory, tps  # noqa: F401  (fixtures)
from test_serve_support import copy_series, need_tools, processes, shared_series, stop_process, wait_for

__all__ = ["processes", "node_factory", "ckpt", "tps"]


@pytest.mark.slow
def test_ten_series_sent_at_once_are_all_contoured_and_delivered(node_factory, tps, tmp_path: Path) -> None:
    src = shared_series()
    copies = [copy_series(src, tmp_path / f"series{i:02d}") for i in range(10)]
    node = node_factory(destination=[tps.destination], workers=2, allow=["SCANNER1"])
    procs = [subprocess.Popen(["storescu", "-xv", "-R", "-aet", "SCANNER1", "-aec", "RTSEG", "+sd", "127.0.0.1",
                               str(node.port), str(c)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for c in copies]
    try:
        for p in procs:
            assert p.wait(300) == 0, p.stderr.read().decode() if p.stderr else ""
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stderr:
                p.stderr.close()
    wait_for(lambda: [s for _, s, _ in node.states()] == ["done"] * 10, 600, "all 10 series to be done", poll=0.5)
    got = tps.received()
    expected = {pydicom.dcmread(next(c.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID for c in copies}
    refs = [ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
            .SeriesInstanceUID for ds in got]
    assert len(got) == 10 and set(refs) == expected  # one RTSTRUCT per series, none lost, none twice
    assert len(list((node.cfg.store_path / "series").rglob("*.dcm"))) == 200


class Orthanc:
    """A throw-away Orthanc: loopback only, free ports, its own storage, no plugins, no remote access."""

    def __init__(self, folder: Path, rtseg_port: int) -> None:
        self.http, self.dicom = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "rtseg-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http, "DicomPort": self.dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "Plugins": [], "DicomCheckCalledAet": False,
            "DicomModalities": {"rtseg": ["RTSEG", "127.0.0.1", rtseg_port]}, "HttpsCACertificates": "",
            "StableAge": 1, "ConcurrentJobs": 1,
        }))
        self.proc: Optional[subprocess.Popen] = None
        self.log = open(folder / "orthanc.log", "wb")

    def start(self) -> "Orthanc":
        self.proc = subprocess.Popen(["Orthanc", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or self._alive(), 60, "Orthanc to start")
        assert self.proc.poll() is None, "Orthanc exited at start"
        return self

    def _alive(self) -> bool:
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, data: bytes) -> Any:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"null")

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        self.log.close()


@pytest.mark.slow
def test_orthanc_pushes_a_series_and_gets_the_rtstruct_back(node_factory, tmp_path: Path, processes: list) -> None:
    need_tools("Orthanc")
    src = shared_series()
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", port)
    processes.append(orthanc)
    orthanc.start()
    node_factory(port=port, destination=[f"ORTHANC@127.0.0.1:{orthanc.dicom}"], allow=["ORTHANC"])
    series_id = None
    for f in sorted(src.glob("*.dcm")):
        series_id = orthanc.post("/instances", f.read_bytes())["ParentSeries"]
    job = orthanc.post("/modalities/rtseg/store", json.dumps({"Resources": [series_id], "Synchronous": True}).encode())
    assert job is not None
    study = orthanc.get(f"/series/{series_id}")["ParentStudy"]

    def rtstruct_series() -> list:
        return [s for s in orthanc.get(f"/studies/{study}/series") if s["MainDicomTags"].get("Modality") == "RTSTRUCT"]

    found = wait_for(rtstruct_series, 180, "the RTSTRUCT to arrive in Orthanc", poll=0.5)
    instances = found[0]["Instances"]
    assert len(instances) == 1
    req = urllib.request.urlopen(f"http://127.0.0.1:{orthanc.http}/instances/{instances[0]}/file", timeout=30)
    rt = tmp_path / "from_orthanc.dcm"
    rt.write_bytes(req.read())
    assert_dciodvfy_clean(rt)
    ds = pydicom.dcmread(rt)
    ref = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == orthanc.get(f"/series/{series_id}")["MainDicomTags"]["SeriesInstanceUID"]
    time.sleep(1.0)
    assert len(rtstruct_series()[0]["Instances"]) == 1
