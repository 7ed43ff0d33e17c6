"""``rtseg serve`` end to end with real dcmtk tools: echo, store the shared JPEG 2000 CT series, RTSTRUCT
delivered to storescp, equal to ``rtseg predict`` voxel for voxel; security and refusals; status."""
from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Iterator

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage

from dicom_checks import assert_dciodvfy_clean
from dicom_syntaxes import ENHANCED, LOSSLESS, SyntaxSet, storescu_config
from rtseg.cli import main as cli_main
from rtseg.inference.pipeline import PredictOptions, predict_path
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.rtstruct import rtstruct_to_labels
from rtseg.serve.config import load_serve_config
from rtseg.serve.logs import setup_logging
from rtseg.serve.service import LOG_NAME, Node
from predict_helpers import NAMES, make_checkpoint
from test_serve_support import (StoreSCP, copy_series, echo, job_states, need_tools, processes, shared_series,
                                storescu, wait_for)

__all__ = ["processes"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny fixed network on a 4 mm grid (as in test_predict): the shared series contours in about a second."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "c4.pt", target_spacing=(4.0, 4.0, 4.0), patch=(32, 32, 16))


class InProcessNode:
    def __init__(self, tmp: Path, config: Path | None = None, **keys: object) -> None:
        self.cfg = load_serve_config(config, {"port": 0, "store": str(tmp / "store"), "series_timeout": 1.0, **keys})
        self.handlers = setup_logging(self.cfg.store_path / LOG_NAME, to_stderr=False)
        self.node = Node(self.cfg)
        self.host, self.port = self.node.start()

    def stop(self) -> None:
        self.node.stop()
        for h in self.handlers:
            logging.getLogger("rtseg.serve").removeHandler(h)
            h.close()

    def states(self) -> list[tuple[int, str, str]]:
        return job_states(self.cfg.store_path)

    def log(self) -> list[dict]:
        return [json.loads(line) for line in (self.cfg.store_path / LOG_NAME).read_text().splitlines()]


@pytest.fixture
def tps(tmp_path: Path, processes: list) -> StoreSCP:
    need_tools("storescp", "storescu", "echoscu")
    s = StoreSCP(tmp_path / "tps").start()
    processes.append(s)
    return s


@pytest.fixture
def node_factory(tmp_path: Path, ckpt: Path, processes: list) -> Iterator:
    def make(config: Path | None = None, **keys: object) -> InProcessNode:
        if config is None:
            keys.setdefault("checkpoint", str(ckpt))
        keys.setdefault("device", "cpu")
        n = InProcessNode(tmp_path, config, **keys)
        processes.append(n)
        return n

    yield make


@pytest.mark.slow
def test_series_is_contoured_and_delivered_like_predict(node_factory, tps: StoreSCP, ckpt: Path, tmp_path: Path) -> None:
    series = shared_series()
    node = node_factory(destination=[tps.destination], allow=["SCANNER1"])
    assert echo(node.port)
    storescu(node.port, series)
    wait_for(lambda: [s for _, s, _ in node.states()] == ["done"], 120, "the job to be done")
    got = tps.received()
    assert len(got) == 1 and got[0].Modality == "RTSTRUCT"
    rt_path = next(p for p in tps.folder.iterdir() if p.is_file())
    assert_dciodvfy_clean(rt_path)
    report = predict_path(ckpt, series, tmp_path / "predict", PredictOptions(("rtstruct",), "cpu"))
    assert not report.failed
    ct = read_dicom_series(series)
    ours, _ = rtstruct_to_labels(rt_path, ct, NAMES)
    theirs, _ = rtstruct_to_labels(tmp_path / "predict" / f"{series.name}_rtstruct.dcm", ct, NAMES)
    assert len(np.unique(ours.array)) > 1
    np.testing.assert_array_equal(ours.array, theirs.array)
    # re-sending the same series: every instance is a duplicate, nothing is contoured or sent again
    storescu(node.port, series)
    n_files = len(list((node.cfg.store_path / "series").rglob("*.dcm")))
    assert n_files == len(list(series.glob("*.dcm")))
    time.sleep(2.5)
    assert [s for _, s, _ in node.states()] == ["done"] and len(tps.received()) == 1
    text = (node.cfg.store_path / LOG_NAME).read_text()
    ds = pydicom.dcmread(next(series.glob("*.dcm")), stop_before_pixels=True)
    assert str(ds.PatientID) not in text and str(ds.PatientName) not in text and ds.SeriesInstanceUID not in text
    events = [e["event"] for e in node.log()]
    assert {"series complete", "contoured", "rtstruct delivered"} <= set(events)
    con = sqlite3.connect(node.cfg.store_path / "jobs.sqlite")
    timings = json.loads(con.execute("SELECT timings FROM jobs").fetchone()[0])
    con.close()
    assert set(timings) == {"read", "inference", "write"}


def test_unknown_calling_ae_is_refused_at_association(node_factory, tps: StoreSCP) -> None:
    series = shared_series()
    node = node_factory(destination=[tps.destination], allow=["SCANNER1"])
    assert not echo(node.port, calling="INTRUDER")
    res = storescu(node.port, series, calling="INTRUDER", check=False)
    assert res.returncode != 0 and "Rejected" in res.stdout + res.stderr
    assert node.states() == []
    assert any(e["event"] == "association rejected" and e["calling_ae"] == "INTRUDER" for e in node.log())


def test_address_allow_list_closes_other_clients(node_factory) -> None:
    need_tools("echoscu")
    node = node_factory(allow_address=["10.9.9.0/24"])
    assert not echo(node.port)
    assert any(e["event"] == "connection refused" for e in node.log())


def test_mr_series_is_refused_and_mr_in_a_ct_class_is_not_contoured(node_factory, tps: StoreSCP, tmp_path: Path) -> None:
    series = shared_series()
    node = node_factory(destination=[tps.destination])
    mr = copy_series(series, tmp_path / "mr", modality="MR", sop_class=MRImageStorage, only=range(3))
    res = storescu(node.port, mr, check=False)
    assert res.returncode != 0 or "no acceptable presentation context" in (res.stdout + res.stderr).lower()
    assert node.states() == []
    odd = copy_series(series, tmp_path / "mr_as_ct", modality="MR", only=range(3))
    storescu(node.port, odd)
    jobs = wait_for(lambda: [j for j in node.states() if j[1] in ("failed", "done")], 60, "the MR job to end")
    assert jobs[0][1] == "failed" and "modality is MR, expected CT" in jobs[0][2]
    assert tps.received() == []


def test_quota_full_answers_out_of_resources_and_corrupts_nothing(node_factory, tmp_path: Path) -> None:
    need_tools("storescu")
    series = shared_series()
    node = node_factory(quota_mb=1.0)  # room for about six of the 20 instances (157 kB each)
    res = storescu(node.port, series, check=False)
    assert "Refused: OutOfResources" in res.stderr  # status 0xA700
    stored = sorted((node.cfg.store_path / "series").rglob("*.dcm"))
    assert 1 <= len(stored) < 20
    for p in stored:  # every stored file is whole
        pydicom.dcmread(p).pixel_array
    jobs = wait_for(lambda: [j for j in node.states() if j[1] == "failed"], 30, "the partial series to be reported")
    assert "quota" in jobs[0][2] and "incomplete" in jobs[0][2]
    assert not list((node.cfg.store_path / "outbox").glob("*.dcm"))


def test_complete_on_release_and_status_lists_jobs_with_state_and_timings(node_factory, tps: StoreSCP, capsys) -> None:
    series = shared_series()
    node = node_factory(destination=[tps.destination], series_timeout=600, complete_on_release=True)
    storescu(node.port, series)
    # done long before the 600 s timeout: the release completed the series
    wait_for(lambda: [s for _, s, _ in node.states()] == ["done"], 120, "the job to be done")
    rc = cli_main.main(["serve", "status", "--store", str(node.cfg.store_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "done" in out and "inference" in out
    rc = cli_main.main(["serve", "status", "--json", "--store", str(node.cfg.store_path)])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0 and rows[0]["state"] == "done" and rows[0]["latency_s"] > 0
    assert rows[0]["deliveries"][0]["state"] == "sent"


@pytest.mark.parametrize("limit, stored, words", [({"max_instances_per_series": 5}, 5, "max_instances_per_series=5"),
                                                 ({"max_instance_mb": 0.1}, 0, "exceeds max_instance_mb=0.1")])
def test_instance_limits_refuse_with_out_of_resources(node_factory, limit: dict, stored: int, words: str) -> None:
    need_tools("storescu")
    node = node_factory(**limit)
    res = storescu(node.port, shared_series(), check=False)
    assert "Refused: OutOfResources" in res.stderr
    assert len(list((node.cfg.store_path / "series").rglob("*.dcm"))) == stored
    refused = [e for e in node.log() if e["event"] == "instance refused"]
    assert refused and words in refused[0]["reason"]
    if stored:
        jobs = wait_for(lambda: [j for j in node.states() if j[1] == "failed"], 30, "the partial series to fail")
        assert words in jobs[0][2]


@pytest.mark.slow
def test_compressed_and_enhanced_series_are_contoured_like_the_uncompressed_one(node_factory, tps: StoreSCP, ckpt: Path,
                                                                                 syntax_set: SyntaxSet, tmp_path: Path) -> None:
    """storescu sends each variant in its own transfer syntax (JPEG Lossless, JPEG-LS, RLE, deflate, big endian,
    JPEG 2000; Enhanced and Legacy Converted Enhanced CT): each is accepted as sent and contoured like the
    uncompressed series."""
    names = [v.name for v in LOSSLESS] + list(ENHANCED)
    node = node_factory(destination=[tps.destination], allow=["SCANNER1"])
    config = storescu_config(tmp_path / "storescu.cfg")
    for name in names:
        res = subprocess.run(["storescu", "-v", "-xf", *config, "-aet", "SCANNER1", "-aec", "RTSEG", "127.0.0.1",
                              str(node.port), *map(str, sorted(syntax_set.folder(name).glob("*.dcm")))],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
    wait_for(lambda: len(node.states()) == len(names) and all(s in ("done", "failed") for _, s, _ in node.states()),
             240, "every job to end")
    assert [(s, e) for _, s, e in node.states() if s != "done"] == []
    stored = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
              for p in (node.cfg.store_path / "series").rglob("*.dcm")}
    assert {v.syntax for v in LOSSLESS} <= stored  # kept as received, not decompressed by the sender
    ref_out = tmp_path / "predict"
    assert not predict_path(ckpt, syntax_set.uncompressed, ref_out, PredictOptions(("nifti",), "cpu")).failed
    ref = nib.load(next(ref_out.glob("*_pred.nii.gz")))
    by_series = {pydicom.dcmread(next(syntax_set.folder(n).glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID: n
                 for n in names}
    got = tps.received()
    assert sorted(by_series[ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
                            .RTReferencedSeriesSequence[0].SeriesInstanceUID] for ds in got) == sorted(names)
    for path in (p for p in tps.folder.iterdir() if p.is_file()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        name = by_series[ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
                         .RTReferencedSeriesSequence[0].SeriesInstanceUID]
        labels, _ = rtstruct_to_labels(path, read_dicom_series(syntax_set.folder(name)), NAMES)
        np.testing.assert_array_equal(labels.array, np.asarray(ref.dataobj), err_msg=name)
