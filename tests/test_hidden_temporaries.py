"""A temporary left by a killed atomic write (``.<name>.XXXX.tmp<suffixes>``, hidden) is never taken for a case."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from rtseg.evaluation.report import pair_files
from rtseg.io.layouts.dataset_convert import convert_legacy_npy_to_nifti
from rtseg.io.legacy_npy import CT_DIR, SEG_DIR, write_legacy_npy_case
from rtseg.io.naming import labels_file, prediction_file
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume


def _leftover(target: Path) -> Path:
    """The file ``rtseg.io.atomic.atomic_path`` had beside ``target`` when its writer was killed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + "".join(target.suffixes), dir=target.parent)
    with open(fd, "wb") as fh:
        fh.write(b"\x93NUMPY partial")
    return Path(name)


def test_legacy_npy_to_nifti_skips_a_killed_writes_temporary(tmp_path: Path) -> None:
    split = tmp_path / "train"
    write_legacy_npy_case(split, "p01", np.zeros((4, 5, 6), np.float32), np.ones((4, 5, 6), np.uint8))
    leftovers = [_leftover(split / CT_DIR / "p02.npy"), _leftover(split / SEG_DIR / "p02.npy")]
    assert all(p.name.endswith(".npy") for p in leftovers)  # so a bare "*.npy" glob would list them
    report = convert_legacy_npy_to_nifti(split, tmp_path / "out", progress=False)
    assert report.ok and report.converted == ["p01"], report
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["p01_ct.nii.gz", "p01_labels.nii.gz"]


def test_pair_files_skips_a_killed_writes_temporary(tmp_path: Path) -> None:
    vol = Volume(np.zeros((3, 3, 3), np.uint8), np.eye(4))
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_nifti(vol, pred / prediction_file("p01"))
    write_nifti(vol, gt / labels_file("p01"))
    leftover = _leftover(pred / prediction_file("p02"))
    assert leftover.name.endswith(".nii.gz")
    assert [(c, p.name, g.name) for c, p, g in pair_files(pred, gt)] == [("p01", "p01_pred.nii.gz", "p01_labels.nii.gz")]
