"""The node records the clinic's structure sets and measures the edits: real dcmtk peers, phantom series (simulated).

5 phantom CT series go to the node with storescu; the node contours them; 5 approved structure sets made
independently (pydicom, from the node's RTSTRUCT: contours moved by whole voxels, an organ deleted, an ROI
renamed) go back with storescu; ``rtseg audit report`` on the node's edits names each edited organ with
the magnitude computed on the arrays, and leaves every other organ at Dice 1.000.
"""
from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from audit_data import edit_set, small_series, two_organ_checkpoint
from predict_helpers import NAMES
from rtseg.cli.main import main
from rtseg.io.rtstruct import rtstruct_to_labels
from rtseg.serve.destinations import split_outputs
from rtseg.serve.models import model_version
from test_audit import shifted
from test_serve import InProcessNode
from test_serve_support import need_tools, processes, storescu, wait_for

__all__ = ["processes"]
# case -> edits (the node's ROIs are TG-263: Prostate = label 1, Bladder = label 2)
EDITS = [
    {},
    {"shift_mm": {"Bladder": 4.0}},
    {"shift_mm": {"Prostate": 8.0}},
    {"delete": ["Bladder"]},
    {"shift_mm": {"Bladder": 8.0}, "rename": {"Prostate": "Prostate Gland"}},
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_organ_checkpoint(tmp_path_factory.mktemp("ckpt") / "two.pt")


def clinic_sets(store: Path) -> dict[str, str]:
    con = sqlite3.connect(store / "jobs.sqlite", timeout=10)
    try:
        return {r[0]: r[1] for r in con.execute("SELECT sop_uid, state FROM clinic_sets")}
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()


def node_outputs(store: Path) -> dict[str, Path]:
    con = sqlite3.connect(store / "jobs.sqlite", timeout=10)
    rows = con.execute("SELECT series_uid, rtstruct FROM jobs WHERE state='done'").fetchall()
    con.close()
    return {uid: next(p for p in split_outputs(r) if p.name.endswith("rtstruct.dcm")) for uid, r in rows}


@pytest.mark.slow
def test_node_measures_the_clinics_edits(tmp_path: Path, ckpt: Path, processes: list) -> None:
    need_tools("storescu")
    node = InProcessNode(tmp_path, checkpoint=str(ckpt), device="cpu", complete_on_release=True)
    processes.append(node)
    store = node.cfg.store_path
    series = []
    for i in range(len(EDITS)):
        series.append(small_series(tmp_path / "ct" / f"p{i}", seed=i))
        storescu(node.port, sorted((tmp_path / "ct" / f"p{i}").glob("*.dcm")))
    wait_for(lambda: len(node_outputs(store)) == len(EDITS), 180, "the 5 series to be contoured")
    outputs = node_outputs(store)
    approved = []
    for i, (s, edits) in enumerate(zip(series, EDITS)):
        auto = outputs[s.meta["dicom"]["series_instance_uid"]]
        approved.append(edit_set(auto, tmp_path / "approved" / f"p{i}.dcm", date=f"2025020{i + 1}", **edits))
    storescu(node.port, approved)
    storescu(node.port, approved[:1])  # sent twice: stored once
    # the node's own output coming back is recognised; a set of a series the node never saw is kept unmatched
    storescu(node.port, [outputs[series[0].meta["dicom"]["series_instance_uid"]]])
    stray = pydicom.dcmread(approved[1])
    stray.SOPInstanceUID = stray.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    stray.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0] \
        .SeriesInstanceUID = "1.2.3.4.5"
    stray.save_as(tmp_path / "stray.dcm", enforce_file_format=True)
    # and a set that names a contoured series but another Frame of Reference is refused
    other = pydicom.dcmread(approved[2])
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    other.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = generate_uid()
    other.save_as(tmp_path / "other_frame.dcm", enforce_file_format=True)
    storescu(node.port, [tmp_path / "stray.dcm"])
    res = storescu(node.port, [tmp_path / "other_frame.dcm"], check=False)
    assert "0xc000" in (res.stdout + res.stderr).lower() or res.returncode != 0
    wait_for(lambda: sorted(clinic_sets(store).values()).count("measured") == len(EDITS), 120, "5 sets measured")
    states = clinic_sets(store)
    assert sorted(states.values()) == ["measured"] * 5 + ["own", "unmatched"]
    assert other.SOPInstanceUID not in states
    assert any(e["event"] == "structure set refused" and "Frame of Reference" in e.get("reason", "") for e in node.log())
    # the node's dashboard: the edited cases link to review pages with both contours
    wait_for(lambda: (store / "audit" / "dashboard.html").is_file()
             and (store / "audit" / "dashboard.html").read_text().count('href="review/case_') >= 4, 60,
             "the node's audit dashboard")
    assert len(list((store / "audit" / "review").glob("*.html"))) == 5
    node.stop()
    processes.remove(node)

    assert main(["audit", "report", "--edits", str(store / "audit" / "edits.csv"), "--out", str(tmp_path / "rep")]) == 0
    with open(store / "audit" / "edits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    version = model_version(ckpt)
    for s, edits in zip(series, EDITS):
        uid = s.meta["dicom"]["series_instance_uid"]
        mine = {r["organ"]: r for r in rows if r["case"] == uid}
        auto, _ = rtstruct_to_labels(outputs[uid], s, NAMES)
        for label, organ in ((1, "Prostate"), (2, "Bladder")):
            r = mine[organ]
            assert r["model"] == version
            shift = edits.get("shift_mm", {}).get(organ)
            if organ in edits.get("delete", []):
                assert r["status"] == "deleted" and float(r["dice"]) == 0.0
            elif shift:
                a = np.asarray(auto.array) == label
                b = shifted(a, s.affine, shift)
                assert r["status"] == "edited"
                assert float(r["dice"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()), abs=1e-5)
                assert float(r["volume_ratio"]) == pytest.approx(b.sum() / a.sum(), abs=1e-5)
            else:
                assert r["status"] == "unchanged" and f"{float(r['dice']):.3f}" == "1.000", (organ, r)
        if "rename" in edits:
            assert mine["Prostate"]["approved_roi"] == "Prostate Gland"
    capsys_out = tmp_path / "status.txt"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["serve", "status", "--store", str(store)]) == 0
    capsys_out.write_text(buf.getvalue())
    assert "5 measured" in buf.getvalue() and "drift alarm" in buf.getvalue()


def _send_sets(port: int, files: list[Path], acked: list[str]) -> None:
    """C-STORE the sets one by one on one association; ``acked`` gets each SOP Instance UID answered with success."""
    from pynetdicom import AE
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RTStructureSetStorage

    ae = AE(ae_title="TPS1")
    ae.add_requested_context(RTStructureSetStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="RTSEG")
    assert assoc.is_established
    try:
        for f in files:
            ds = pydicom.dcmread(f)
            status = assoc.send_c_store(ds)
            if not status or status.Status != 0x0000:
                return
            acked.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()


@pytest.mark.slow
def test_kill9_while_structure_sets_arrive_loses_none(tmp_path: Path, ckpt: Path, processes: list) -> None:
    import threading

    from test_serve_support import NodeProcess

    need_tools("storescu", "echoscu")
    node = NodeProcess(tmp_path / "store", ["--checkpoint", str(ckpt), "--device", "cpu", "--series-timeout", "1",
                                            "--complete-on-release"])
    processes.append(node)
    node.start()
    store = node.store
    cts = [small_series(tmp_path / "ct" / f"k{i}", seed=10 + i) for i in range(2)]
    for i in range(2):
        storescu(node.port, sorted((tmp_path / "ct" / f"k{i}").glob("*.dcm")))
    wait_for(lambda: len(node_outputs(store)) == 2, 120, "2 series contoured")
    outputs = node_outputs(store)
    sets = [edit_set(outputs[cts[k % 2].meta["dicom"]["series_instance_uid"]], tmp_path / "sets" / f"s{k:02d}.dcm",
                     shift_mm={"Bladder": 2.0 * (k % 3)}) for k in range(20)]
    acked: list[str] = []
    killer = threading.Thread(target=lambda: (wait_for(lambda: len(clinic_sets(store)) >= 5, 60, "5 sets stored",
                                                       poll=0.005), node.kill9()))
    killer.start()
    try:
        _send_sets(node.port, sets, acked)
    except Exception:  # the node died under the association: what was acknowledged is what counts
        pass
    killer.join()
    assert 3 <= len(acked) < len(sets), "the kill came too late or too early to test anything"
    stored = clinic_sets(store)
    assert set(acked) <= set(stored), "an acknowledged structure set was lost"
    node.start()  # restarted: every stored set is measured
    wait_for(lambda: sorted(set(clinic_sets(store).values())) == ["measured"], 120, "the stored sets to be measured")
    rest = [s for s in sets if str(pydicom.dcmread(s, stop_before_pixels=True).SOPInstanceUID) not in clinic_sets(store)]
    _send_sets(node.port, rest, acked)  # the sender's retry of what was not acknowledged
    wait_for(lambda: list(clinic_sets(store).values()).count("measured") == len(sets), 120, "all 20 sets measured")
    con = sqlite3.connect(store / "jobs.sqlite")
    n_rows = con.execute("SELECT COUNT(*) FROM edits").fetchone()[0]
    con.close()
    assert n_rows == 2 * len(sets)  # two organs per set, each set measured once
