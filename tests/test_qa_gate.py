"""The QA gate in ``rtseg predict`` and ``rtseg serve``: a CT unlike the training CTs is held, not delivered, until a
person releases it (then with its flags in the RTSTRUCT); an in-distribution CT is delivered at once; the research
policy delivers both. The model is a pelvic one (tests/gate_helpers.py: statistics of the demo's pelvic phantoms);
the held CT is the shared thorax series (../shared/data/dicom-ct-series: 0.98 mm pixels, 500 mm field of view)."""
from __future__ import annotations

import csv
import json
import sqlite3
import time
from pathlib import Path

import pydicom
import pytest

from dicom_checks import assert_dciodvfy_clean
from gate_helpers import empty_checkpoint, pelvic_checkpoint, pelvis_series, thin_series
from rtseg.cli.main import main
from rtseg.review.gate import POLICIES, action_of, policy_table
from test_serve import InProcessNode
from test_serve_support import StoreSCP, need_tools, processes, shared_series, storescu, wait_for

__all__ = ["processes"]


@pytest.fixture(scope="module")
def pelvic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pelvic_checkpoint(tmp_path_factory.mktemp("ckpt") / "pelvic_demo.pt")


@pytest.fixture(scope="module")
def pelvis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pelvis_series(tmp_path_factory.mktemp("series") / "pelvis")


def test_policy_table_holds_input_flags_and_delivers_organ_flags() -> None:
    assert action_of("input", "clinical") == "hold"
    table = dict(policy_table())
    assert {k for k, v in table.items() if v["clinical"] == "hold"} == {"input", "registration"}
    assert all(v["research"] == "deliver with flags" for v in table.values())
    assert {"missing", "volume", "components", "cut_off"} <= set(table) and set(POLICIES) == {"clinical", "research"}


def test_predict_holds_the_thorax_and_delivers_the_pelvis(pelvic: Path, pelvis: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "thorax").symlink_to(shared_series())
    (src / "pelvis").symlink_to(pelvis)
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", str(pelvic), "--input", str(src), "--format", "rtstruct", "seg", "--device", "cpu"]
    assert main([*args, "--output", str(out)]) == 1
    assert "held by the QA gate" in capsys.readouterr().err
    rows = {r["case"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["thorax"]["status"] == "held" and rows["thorax"]["qa_gate"] == "hold"
    assert "field of view" in rows["thorax"]["error"] and "voxel spacing" in rows["thorax"]["flags"]
    assert rows["pelvis"]["status"] == "ok" and rows["pelvis"]["qa_gate"] in ("deliver", "deliver with flags")
    assert not (out / "thorax_rtstruct.dcm").exists() and not (out / "thorax_seg.dcm").exists()
    assert (out / "pelvis_rtstruct.dcm").is_file() and (out / "pelvis_seg.dcm").is_file()
    held = pydicom.dcmread(out / "held" / "thorax_rtstruct.dcm")
    qa = json.loads((out / "thorax_qa.json").read_text())
    assert qa["gate"]["action"] == "hold" and qa["gate"]["reasons"]
    for flag in qa["flags"]:
        assert flag["text"] in held.StructureSetDescription
    by_organ = {o.ReferencedROINumber: o.get("ROIObservationDescription", "") for o in held.RTROIObservationsSequence}
    prostate_flags = [f["text"] for f in qa["flags"] if f["organ"] == "prostate"]
    assert prostate_flags and all(t in by_organ[1] for t in prostate_flags)
    seg = pydicom.dcmread(out / "held" / "thorax_seg.dcm", stop_before_pixels=True)
    assert all(t in seg.SegmentSequence[0].SegmentDescription for t in prostate_flags)
    for p in [*(out / "held").iterdir(), out / "pelvis_rtstruct.dcm", out / "pelvis_seg.dcm"]:
        assert_dciodvfy_clean(p)
    # without the contour QA the gate runs the input checks itself: the thorax is still held
    assert main([*args, "--output", str(tmp_path / "noqa"), "--no-qa"]) == 1
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "noqa" / "summary.csv"))}
    assert rows["thorax"]["status"] == "held" and rows["pelvis"]["status"] == "ok"
    assert (tmp_path / "noqa" / "held" / "thorax_rtstruct.dcm").is_file()
    # research: everything delivered, with its flags
    assert main([*args, "--output", str(tmp_path / "research"), "--qa-policy", "research"]) == 0
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "research" / "summary.csv"))}
    assert rows["thorax"]["status"] == rows["pelvis"]["status"] == "ok"
    assert rows["thorax"]["qa_gate"] == "deliver with flags"
    assert "voxel spacing" in pydicom.dcmread(tmp_path / "research" / "thorax_rtstruct.dcm").StructureSetDescription


def status_json(store: Path, capsys) -> dict[int, dict]:
    capsys.readouterr()
    assert main(["serve", "status", "--json", "--store", str(store)]) == 0
    return {j["id"]: j for j in map(json.loads, capsys.readouterr().out.splitlines())}


@pytest.fixture
def tps(tmp_path: Path, processes: list) -> StoreSCP:
    need_tools("storescp", "storescu", "echoscu")
    s = StoreSCP(tmp_path / "tps").start()
    processes.append(s)
    return s


def start_node(tmp_path: Path, processes: list, ckpt: Path, tps: StoreSCP, **keys: object) -> InProcessNode:
    node = InProcessNode(tmp_path, checkpoint=str(ckpt), destination=[tps.destination], device="cpu", **keys)
    processes.append(node)
    return node


@pytest.mark.slow
def test_node_holds_the_thorax_until_released_and_delivers_the_pelvis_at_once(
        pelvic: Path, pelvis: Path, tmp_path: Path, processes: list, tps: StoreSCP, capsys) -> None:
    node = start_node(tmp_path, processes, pelvic, tps)
    store = node.cfg.store_path
    storescu(node.port, shared_series())
    wait_for(lambda: [s for _, s, _ in node.states()] == ["held"], 120, "the thorax job to be held")
    storescu(node.port, pelvis)
    wait_for(lambda: [s for _, s, _ in node.states()] == ["held", "done"], 120, "the pelvis job to be delivered")
    got = tps.received()
    assert len(got) == 1 and got[0].Modality == "RTSTRUCT"  # the pelvis only; the thorax waits
    jobs = status_json(store, capsys)
    held = jobs[1]
    assert held["state"] == "held" and held["qa"]["action"] == "hold" and held["qa"]["reasons"]
    assert isinstance(held["qa"]["flags"], list) and any("field of view" in f["text"] for f in held["qa"]["flags"])
    assert set(held["outputs"]) == {"rtstruct", "qa"} and held["outputs"]["rtstruct"].endswith("_rtstruct.dcm")
    assert held["model"].startswith("pelvic_demo.pt sha256:")
    capsys.readouterr()
    assert main(["serve", "status", "--store", str(store)]) == 0
    assert "held by the QA gate" in capsys.readouterr().out
    time.sleep(1.0)
    assert len(tps.received()) == 1  # still held
    assert main(["serve", "release", "1", "--store", str(store), "--by", "dr.physicist"]) == 0
    assert "job 1 released by dr.physicist" in capsys.readouterr().out
    wait_for(lambda: [s for _, s, _ in node.states()] == ["done", "done"], 60, "the released job to be delivered")
    rts = tps.received()
    assert len(rts) == 2
    thorax = next(d for d in rts if "voxel spacing" in str(d.get("StructureSetDescription", "")))
    assert "field of view" in thorax.StructureSetDescription
    for p in tps.folder.iterdir():
        if p.is_file():
            assert_dciodvfy_clean(p)
    con = sqlite3.connect(store / "jobs.sqlite")
    by, at, model = con.execute("SELECT reviewed_by, reviewed_at, model FROM jobs WHERE id=1").fetchone()
    con.close()
    assert by == "dr.physicist" and abs(at - time.time()) < 120 and model == held["model"]
    assert any(e["event"] == "job released" and e["by"] == "dr.physicist" for e in node.log())
    assert main(["serve", "release", "1", "--store", str(store)]) == 2  # not held any more
    assert "job 1 is done, not held" in capsys.readouterr().err


@pytest.mark.slow
def test_node_reject_sends_nothing_and_research_policy_delivers_both(
        pelvic: Path, pelvis: Path, tmp_path: Path, processes: list, tps: StoreSCP, capsys) -> None:
    node = start_node(tmp_path / "a", processes, pelvic, tps)
    storescu(node.port, shared_series())
    wait_for(lambda: [s for _, s, _ in node.states()] == ["held"], 120, "the thorax job to be held")
    assert main(["serve", "reject", "1", "--store", str(node.cfg.store_path)]) == 0
    assert [(s, e.startswith("rejected by ")) for _, s, e in node.states()] == [("rejected", True)]
    time.sleep(1.0)
    assert tps.received() == []
    research = start_node(tmp_path / "b", processes, pelvic, tps, qa_policy="research")
    storescu(research.port, shared_series())
    storescu(research.port, pelvis)
    wait_for(lambda: [s for _, s, _ in research.states()] == ["done", "done"], 120, "both jobs to be delivered")
    assert len(tps.received()) == 2


@pytest.mark.slow
def test_node_fails_empty_predictions_and_thin_series_and_sends_nothing(
        pelvic: Path, pelvis: Path, tmp_path: Path, processes: list, tps: StoreSCP) -> None:
    node = start_node(tmp_path / "a", processes, pelvic, tps, format=["rtstruct", "seg"])
    for n in (1, 2):
        storescu(node.port, thin_series(tmp_path / f"thin{n}", n))
    jobs = wait_for(lambda: [j for j in node.states() if j[1] == "failed"] if len(
        [j for j in node.states() if j[1] == "failed"]) == 2 else None, 120, "both thin series to fail")
    assert all("at least 3 slices" in e for _, _, e in jobs)
    empty = start_node(tmp_path / "b", processes, empty_checkpoint(tmp_path / "empty.pt"), tps)
    storescu(empty.port, pelvis)
    jobs = wait_for(lambda: [j for j in empty.states() if j[1] == "failed"], 120, "the empty prediction to fail")
    assert "the prediction holds no organ" in jobs[0][2]
    time.sleep(1.0)
    assert tps.received() == []
    for store in (node.cfg.store_path, empty.cfg.store_path):
        assert not list((store / "outbox").glob("*.dcm"))
