"""``torchrun --nproc_per_node=N -m rtseg predict``: the ranks share the cases, one summary at the end,
and every output equals what one process writes."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from predict_helpers import make_checkpoint, phantom
from rtseg.inference.shard import Shard, in_case_order

ROOT = Path(__file__).resolve().parents[1]


def _cases(folder: Path, n: int) -> list[str]:
    folder.mkdir()
    names = []
    for i in range(n):
        hu = phantom(shape=(40, 32, 28), seed=i)
        affine = np.diag([1.5, 1.5, 2.0, 1.0])
        name = f"case{i:02d}"
        nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), folder / f"{name}_ct.nii.gz")
        names.append(name)
    return names


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_shard_takes_every_nth_case_and_merges_back_in_order() -> None:
    items = [f"c{i}" for i in range(7)]
    shards = [Shard(r, 3, r) for r in range(3)]
    parts = [s.take(items) for s in shards]
    assert parts == [["c0", "c3", "c6"], ["c1", "c4"], ["c2", "c5"]]
    assert in_case_order(parts, items, name_of=lambda x: x) == items
    assert Shard().take(items) == items and not Shard().enabled


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path: Path) -> None:
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun not installed with this Python")
    ckpt = make_checkpoint(tmp_path / "model.pt")
    names = _cases(tmp_path / "in", 5)
    args = ["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "in"), "--device", "cpu",
            "--format", "nifti", "html"]
    one = subprocess.run([sys.executable, "-m", "rtseg", *args, "--output", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rtseg"]
    two = subprocess.run([*torchrun, *args, "--output", str(tmp_path / "two")], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    # one summary line on stdout (rank 0), each rank logged its own share
    assert two.stdout.count("case(s) predicted") == 1 and "5 of 5 case(s) predicted" in two.stdout
    assert "(rank 0 of 2)" in two.stderr and "(rank 1 of 2)" in two.stderr
    for name in names:
        a = nib.load(tmp_path / "one" / f"{name}_pred.nii.gz")
        b = nib.load(tmp_path / "two" / f"{name}_pred.nii.gz")
        assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)) and np.allclose(a.affine, b.affine)
        qa_a = json.loads((tmp_path / "one" / f"{name}_qa.json").read_text())
        qa_b = json.loads((tmp_path / "two" / f"{name}_qa.json").read_text())
        assert qa_a["flags"] == qa_b["flags"]
    rows_one, rows_two = _rows(tmp_path / "one" / "summary.csv"), _rows(tmp_path / "two" / "summary.csv")
    assert [r["case"] for r in rows_two] == [r["case"] for r in rows_one] and len(rows_two) == 5
    assert [r["flags"] for r in rows_two] == [r["flags"] for r in rows_one]
    index = (tmp_path / "two" / "index.html").read_text()
    assert all(f"{n}_review.html" in index for n in names)  # rank 0's index lists rank 1's cases too
