"""Serve destinations as a registry (C-STORE, folder, and a toy kind registered here) and the node's outputs
through the predict pipeline: the rule's formats (SEG too), its ROI names and the contour QA."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pydicom
import pytest

from rtseg.errors import ConfigError
from rtseg.inference.pipeline import PredictOptions, predict_path
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.rtstruct import rtstruct_to_labels
from rtseg.io.dicom.seg import seg_to_labels
from rtseg.serve.config import load_serve_config
from rtseg.serve.destinations import join_outputs, parse_destination, register_destination, unregister_destination
from rtseg.serve.dicom_destination import DicomDestination
from rtseg.serve.folder_destination import FolderDestination
from rtseg.serve.jobs import InstanceInfo, JobQueue
from rtseg.serve.routing import resolve_destinations
from rtseg.serve.sender import Sender
from predict_helpers import NAMES
from test_serve import ckpt, node_factory, tps  # noqa: F401  (fixtures)
from test_serve_support import processes, shared_series, storescu, wait_for

__all__ = ["processes", "node_factory", "ckpt", "tps"]


def test_old_destination_strings_parse_as_before_and_the_folder_kind_is_new(tmp_path: Path) -> None:
    d = parse_destination(" TPS@10.0.0.2:104 ")
    assert d == DicomDestination("TPS", "10.0.0.2", 104) and str(d) == "TPS@10.0.0.2:104"
    f = parse_destination(f"folder:{tmp_path}")
    assert f == FolderDestination(tmp_path) and parse_destination(str(f)) == f
    for bad in ("TPS:104", "TPS@host:70000", "folder:relative/path", "A" * 17 + "@h:104"):
        with pytest.raises(ConfigError, match=r"expected AE@host:port .*, folder:/ABSOLUTE/PATH or 'caller'"):
            parse_destination(bad)
    cfg = load_serve_config(None, {"store": "s", "checkpoint": "a.pt", "destination": [f"folder:{tmp_path}"]})
    assert resolve_destinations(cfg.effective_rules()[0], "SCANNER1", "127.0.0.1", None) == [f]
    with pytest.raises(ConfigError, match=r"format: .*\['jpeg'\]: expected one or more of nifti"):
        load_serve_config(None, {"store": "s", "checkpoint": "a.pt", "format": ["jpeg"]})


def test_folder_destination_copies_every_file_whole(tmp_path: Path) -> None:
    files = []
    for i, size in enumerate((10, 300_000)):
        p = tmp_path / "outbox" / f"job{i}_rtstruct.dcm"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(np.random.default_rng(i).bytes(size))
        files.append(p)
    dest = FolderDestination(tmp_path / "share" / "in")  # created when missing
    assert dest.send(files, "RTSEG") is None
    got = sorted((tmp_path / "share" / "in").iterdir())
    assert [p.name for p in got] == [p.name for p in files]  # no temporary file left
    assert all(g.read_bytes() == f.read_bytes() for g, f in zip(got, files))


class Pigeon:
    """The toy kind: ``pigeon:NAME`` remembers what it was sent."""

    name = "pigeon"
    syntax = "pigeon:NAME"
    loft: dict[str, list[list[str]]] = {}

    def parse(self, text: str) -> Optional["Pigeon.Bird"]:
        return Pigeon.Bird(text[len("pigeon:"):]) if text.startswith("pigeon:") and len(text) > 7 else None

    class Bird:
        def __init__(self, name: str) -> None:
            self.name = name

        def __str__(self) -> str:
            return f"pigeon:{self.name}"

        def send(self, files: Sequence[Path], node_ae_title: str) -> Optional[str]:
            Pigeon.loft.setdefault(self.name, []).append([p.name for p in files])
            return None if self.name != "lost" else "the pigeon got lost"


@pytest.fixture
def pigeon() -> Iterator[None]:
    register_destination(Pigeon())
    Pigeon.loft.clear()
    try:
        yield
    finally:
        unregister_destination("pigeon")


def _contoured_job(queue: JobQueue, outputs: list[Path], destinations: list[str]) -> int:
    info = InstanceInfo("1.2.3.4", "1.2.3", "s1", "CT", "", "")
    jid, _ = queue.add_instance(info, Path("x.dcm"), 1, "SCANNER1", "127.0.0.1")
    queue.set_complete(jid, "default", "a.pt")
    assert queue.claim() is not None
    queue.contoured(jid, join_outputs(outputs), {}, destinations)  # type: ignore[arg-type]
    return jid


def test_a_registered_destination_kind_is_valid_config_and_the_sender_dispatches_to_it(pigeon: None,
                                                                                        tmp_path: Path) -> None:
    cfg = load_serve_config(None, {"store": str(tmp_path), "checkpoint": "a.pt",
                                   "destination": ["pigeon:home", "pigeon:lost"]})
    dests = resolve_destinations(cfg.effective_rules()[0], "SCANNER1", "127.0.0.1", None)
    assert [str(d) for d in dests] == ["pigeon:home", "pigeon:lost"]
    queue = JobQueue(tmp_path / "jobs.sqlite")
    try:
        outputs = [tmp_path / "job000001_ab_rtstruct.dcm", tmp_path / "job000001_ab_qa.json"]
        jid = _contoured_job(queue, outputs, [str(d) for d in dests])
        sender = Sender(cfg, queue, threading.Event())
        for d in queue.due_deliveries():
            assert d.rtstruct == join_outputs(outputs)
            sender.send(d)
        assert Pigeon.loft == {"home": [[p.name for p in outputs]], "lost": [[p.name for p in outputs]]}
        rows = {d["destination"]: d for d in queue.jobs()[0]["deliveries"]}
        assert rows["pigeon:home"]["state"] == "sent"
        assert rows["pigeon:lost"]["state"] == "pending" and rows["pigeon:lost"]["last_error"] == "the pigeon got lost"
        assert queue.job(jid)["state"] == "sending"  # one copy still on its way
    finally:
        queue.close()
    with pytest.raises(ConfigError, match="pigeon:NAME"):
        load_serve_config(None, {"store": "s", "checkpoint": "a.pt", "destination": ["pigeon:"]})


def test_node_writes_the_rules_formats_with_its_roi_names_and_qa_to_a_folder_and_a_tps(
        node_factory, tps, ckpt: Path, tmp_path: Path) -> None:
    series = shared_series()
    mapping = tmp_path / "names.json"
    mapping.write_text(json.dumps({"prostate": "Prost_CTV"}))
    share = tmp_path / "share"
    node = node_factory(destination=[tps.destination, f"folder:{share}"], format=["rtstruct", "seg"],
                        roi_names=str(mapping))
    storescu(node.port, series)
    wait_for(lambda: [s for _, s, _ in node.states()] == ["done"], 120, "the job to be done")
    got = sorted(p.name.split("_", 2)[2] for p in share.iterdir())
    assert got == ["qa.json", "rtstruct.dcm", "seg.dcm"]
    assert sorted(ds.Modality for ds in tps.received()) == ["RTSTRUCT", "SEG"]  # one association, two SOP classes
    ct = read_dicom_series(series)
    report = predict_path(ckpt, series, tmp_path / "predict",
                          PredictOptions(formats=("rtstruct", "seg"), device="cpu", roi_names=mapping))
    assert not report.failed
    rt_node, seg_node = next(share.glob("*_rtstruct.dcm")), next(share.glob("*_seg.dcm"))
    assert "Prost_CTV" in {str(r.ROIName) for r in pydicom.dcmread(rt_node).StructureSetROISequence}
    aliases = {"prostate": ["Prost_CTV"]}
    ours = rtstruct_to_labels(rt_node, ct, NAMES, aliases)[0].array
    assert len(np.unique(ours)) > 1
    np.testing.assert_array_equal(ours, rtstruct_to_labels(tmp_path / "predict" / f"{series.name}_rtstruct.dcm", ct,
                                                           NAMES, aliases)[0].array)
    np.testing.assert_array_equal(seg_to_labels(seg_node, ct, NAMES, aliases)[0].array, ours)
    qa = json.loads(next(share.glob("*_qa.json")).read_text())
    event = next(e for e in node.log() if e["event"] == "contoured")
    assert event["qa_flags"] == qa["n_flags"]
    assert sorted(o.split("_", 2)[2] for o in event["outputs"]) == got


def _body(path: Path) -> bytes:
    """A DICOM file's dataset bytes after its File Meta Information (what a C-STORE carries)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    with open(path, "rb") as fh:
        read_preamble(fh, False)
        _read_file_meta_info(fh)
        return fh.read()


@pytest.mark.parametrize("implicit_only", [False, True])
def test_files_go_out_byte_for_byte_or_converted_where_their_syntax_is_refused(tmp_path: Path,
                                                                                implicit_only: bool) -> None:
    """The RTSTRUCT (Implicit VR) and SEG (Explicit VR) reach dcmtk storescp; where it takes the file's own
    syntax the dataset bytes arrive unchanged (sent without decoding), where it accepts Implicit VR only the SEG
    is converted and arrives with the same elements."""
    import subprocess

    from gate_helpers import pelvis_series
    from predict_helpers import COLORS
    from rtseg.io.dicom.seg import write_seg
    from rtseg.io.rtstruct.write import write_rtstruct
    from rtseg.serve.scp import free_port
    from test_serve_support import need_tools, stop_process

    need_tools("storescp", "echoscu")
    ct = read_dicom_series(pelvis_series(tmp_path / "ct"))
    labels = np.zeros(ct.shape, np.uint8)
    labels[20:40, 20:40, 10:20] = 1
    files = [write_rtstruct(labels, ct, NAMES, COLORS, tmp_path / "rs.dcm"),
             write_seg(labels, ct, NAMES, COLORS, tmp_path / "seg.dcm")]
    syntaxes = {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in files}
    assert syntaxes == {pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian}
    port, inbox = free_port(), tmp_path / "tps"
    inbox.mkdir()
    proc = subprocess.Popen(["storescp", "-aet", "TPS", "-od", str(inbox), "-uf", *(["+xi"] if implicit_only else []),
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: subprocess.run(["echoscu", "-aec", "TPS", "127.0.0.1", str(port)],
                                        capture_output=True).returncode == 0, 20, "storescp to listen")
        assert DicomDestination("TPS", "127.0.0.1", port).send(files, "RTSEG") is None
    finally:
        stop_process(proc, 10)
    got = {str(pydicom.dcmread(p).SOPInstanceUID): p for p in inbox.iterdir()}
    for sent in files:
        ds = pydicom.dcmread(sent)
        arrived = got[str(ds.SOPInstanceUID)]
        converted = implicit_only and ds.file_meta.TransferSyntaxUID != pydicom.uid.ImplicitVRLittleEndian
        assert (_body(arrived) == _body(sent)) == (not converted)
        if converted:
            back = pydicom.dcmread(arrived)
            assert back.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
            assert [e.tag for e in back] == [e.tag for e in ds] and back.SegmentSequence == ds.SegmentSequence
