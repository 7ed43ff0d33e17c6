"""What libraries print through rtseg's command line: highdicom's per-module INFO lines ("copy attributes of
module ...") and progress bars never reach predict's or the node's log; a library's logged traceback (pydicom
logs every failed decoder's exception) never comes before rtseg's one-line error; ``-v`` shows both."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from predict_helpers import make_checkpoint, phantom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless
from test_serve_support import NodeProcess, job_states, need_tools, processes, storescu, wait_for

from rtseg.io.dicom.series import write_dicom_series
from rtseg.io.volume import Volume, affine_from_spacing

__all__ = ["processes"]
ROOT = Path(__file__).resolve().parents[1]
HIGHDICOM_INFO = "copy attributes of module"


def rtseg(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rtseg", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("liblogs")
    series = d / "series"
    write_dicom_series(Volume(phantom((40, 36, 12)), affine_from_spacing((2.0, 2.0, 2.0))), series)
    broken = d / "broken"
    write_dicom_series(Volume(phantom((40, 36, 12)), affine_from_spacing((2.0, 2.0, 2.0))), broken)
    first = sorted(broken.glob("*.dcm"))[0]  # JPEG 2000 pixel data no decoder reads: pydicom logs each failure
    ds = pydicom.dcmread(first)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.save_as(first, enforce_file_format=True)
    return {"ckpt": make_checkpoint(d / "c.pt"), "series": series, "broken": broken, "dir": d}


def test_predict_log_has_no_highdicom_info_or_bars(case):
    out = case["dir"] / "out"
    proc = rtseg("predict", "--checkpoint", str(case["ckpt"]), "--input", str(case["series"]), "--output", str(out),
                 "--format", "rtstruct", "seg")
    assert proc.returncode == 0, proc.stderr
    assert (out / "series_seg.dcm").is_file() and "1 of 1 case(s) predicted" in proc.stderr + proc.stdout
    assert HIGHDICOM_INFO not in proc.stderr and "highdicom" not in proc.stderr, proc.stderr
    assert "windows:" not in proc.stderr and "\r" not in proc.stderr  # stderr is no terminal: no progress bar
    # -v: debug logging, libraries included (what the default hides is really there)
    verbose = rtseg("-v", "predict", "--checkpoint", str(case["ckpt"]), "--input", str(case["series"]),
                    "--output", str(case["dir"] / "out_v"), "--format", "seg")
    assert verbose.returncode == 0 and HIGHDICOM_INFO in verbose.stderr


def test_library_traceback_never_precedes_the_one_line_error(case):
    args = ("predict", "--checkpoint", str(case["ckpt"]), "--input", str(case["broken"]))
    proc = rtseg(*args, "--output", str(case["dir"] / "out_b"))
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("rtseg predict: error: ")]
    assert len(errors) == 1 and "pixel data" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "pydicom" not in proc.stderr, proc.stderr
    verbose = rtseg("-v", *args, "--output", str(case["dir"] / "out_bv"))
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr and "pydicom: " in verbose.stderr


@pytest.mark.slow
def test_node_log_has_no_library_info(case, tmp_path, processes):
    """``rtseg serve`` writing RTSTRUCT and SEG: its stderr and its JSON log hold rtseg's events, no highdicom INFO
    line, no pynetdicom association chatter, no progress bar."""
    need_tools("storescu", "echoscu")
    outbox = tmp_path / "tps"
    outbox.mkdir()
    node = NodeProcess(tmp_path / "store", ["--checkpoint", str(case["ckpt"]), "--destination", f"folder:{outbox}",
                                            "--format", "rtstruct", "--format", "seg", "--allow", "SCANNER1",
                                            "--device", "cpu", "--series-timeout", "1"])
    processes.append(node)
    node.start()
    storescu(node.port, case["series"])
    wait_for(lambda: [s for _, s, _ in job_states(node.store)] == ["done"], 120, "the job to be done")
    assert len(list(outbox.rglob("*.dcm"))) == 2
    node.stop()
    stderr = (node.store.parent / f"{node.store.name}.stderr").read_text()
    log = (node.store / "serve.log.jsonl").read_text()
    for text in (stderr, log):
        assert HIGHDICOM_INFO not in text and "highdicom" not in text and "\r" not in text
        assert "Accepting Association" not in text and "Store Request" not in text and "pynetdicom" not in text
    assert "delivered" in stderr  # the node's own events are still there
