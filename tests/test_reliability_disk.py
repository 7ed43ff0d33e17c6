"""A full disk: every writer fails with one line naming ENOSPC and the path, keeps the previous file and
leaves no temporary file. On a real 1 MiB tmpfs where mounting is allowed (root), else skipped; the error
paths are also driven by injected OSErrors, which needs no mount."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from rtseg.cli import main as cli_main
from rtseg.errors import RtsegError
from rtseg.io import atomic
from rtseg.io.atomic import WriteError, atomic_path
from rtseg.io.checkpoint import load_checkpoint, save_checkpoint
from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from rtseg.io.jsonfile import write_json
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.rtstruct import write_rtstruct
from rtseg.io.legacy_npy import write_npy
from rtseg.io.volume import Volume, affine_from_spacing

AFFINE = affine_from_spacing((1.0, 1.0, 2.0))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs, unmounted afterwards; skipped where mounting is not permitted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'mount failed'}); injected errors cover this")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(disk: Path) -> None:
    """Take every free block, so the next write fails with ENOSPC."""
    with open(disk / "filler", "wb", buffering=0) as fh:
        for chunk in (65536, 4096):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


def volume(shape=(64, 64, 32), seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)  # random values: gzip cannot shrink them below the disk size
    return Volume(rng.integers(-1000, 1000, shape).astype(np.int16), AFFINE)


def big_checkpoint(path: Path) -> Path:
    return save_checkpoint({"model": {"w": torch.rand(150_000)}}, path)


def big_nifti(path: Path) -> Path:
    return write_nifti(volume(), path)


def big_npy(path: Path) -> Path:
    return write_npy(volume().array, path)


def big_json(path: Path) -> Path:
    return write_json({"cases": ["x" * 100] * 5_000}, path)


WRITERS: dict[str, tuple[str, Callable[[Path], Path]]] = {
    "checkpoint": ("last.pt", big_checkpoint),
    "nifti": ("p01_pred.nii.gz", big_nifti),
    "legacy_npy": ("p01.npy", big_npy),
    "report_json": ("summary.json", big_json),
}


def assert_clean_failure(disk: Path, name: str, write: Callable[[Path], Path], previous: bytes | None) -> None:
    before = sorted(p.name for p in disk.iterdir())
    with pytest.raises(WriteError) as err:
        write(disk / name)
    msg = str(err.value)
    assert msg.startswith(f"{disk / name}: cannot write (ENOSPC, No space left on device)") and "\n" not in msg
    assert ("previous file is unchanged" if previous is not None else "nothing was written") in msg
    assert sorted(p.name for p in disk.iterdir()) == before  # no temporary file left
    if previous is not None:
        assert (disk / name).read_bytes() == previous


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_full_disk_keeps_the_previous_file_and_leaves_no_temporary(small_disk: Path, kind: str):
    name, write = WRITERS[kind]
    previous = b"previous version"
    (small_disk / name).write_bytes(previous)
    fill(small_disk)
    assert_clean_failure(small_disk, name, write, previous)
    (small_disk / "filler").unlink()
    write(small_disk / name)  # space again: the same call succeeds
    assert (small_disk / name).read_bytes() != previous


def test_full_disk_with_a_real_checkpoint_and_rtstruct(small_disk: Path, tmp_path: Path):
    """The previous checkpoint still loads; an RTSTRUCT (many contours) and a DICOM slice fail cleanly."""
    big_checkpoint(small_disk / "last.pt")
    previous = (small_disk / "last.pt").read_bytes()
    write_dicom_series(volume((48, 40, 6)), tmp_path / "ct")
    ct = read_dicom_series(tmp_path / "ct")
    labels = np.zeros(ct.shape, np.uint8)
    labels[5:40, 5:35, :] = 1
    fill(small_disk)
    assert_clean_failure(small_disk, "last.pt", big_checkpoint, previous)
    assert torch.equal(load_checkpoint(small_disk / "last.pt")["model"]["w"], torch.load(_bytes_file(tmp_path, previous), weights_only=True)["model"]["w"])
    assert_clean_failure(small_disk, "rs.dcm", lambda p: write_rtstruct(labels, ct, ["background", "body"], [(255, 0, 0)], p), None)
    with pytest.raises(WriteError, match=r"CT_0000\.dcm: cannot write \(ENOSPC"):
        write_dicom_series(volume((48, 40, 6)), small_disk / "series")
    assert not [p for p in (small_disk / "series").iterdir()]


def _bytes_file(tmp_path: Path, data: bytes) -> Path:
    (tmp_path / "copy.pt").write_bytes(data)
    return tmp_path / "copy.pt"


def test_evaluate_report_on_a_full_disk_is_one_line_and_exit_2(small_disk: Path, tmp_path: Path, capsys):
    labels = np.zeros((16, 16, 8), np.uint8)
    labels[4:12, 4:12, 2:6] = 1
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        write_nifti(Volume(labels, AFFINE), tmp_path / folder / "p01.nii.gz")
    (small_disk / "report").mkdir()
    fill(small_disk)
    rc = cli_main.main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                        "--out", str(small_disk / "report"), "--no-plots"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"rtseg evaluate: error: {small_disk / 'report'}")
    assert "ENOSPC, No space left on device" in err[0]
    assert list((small_disk / "report").iterdir()) == []


# --- injected errors (no mount needed) --------------------------------------------------------

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
def test_error_at_fsync_keeps_previous_and_removes_temporary(tmp_path: Path, monkeypatch, code: int):
    target = tmp_path / "ct.nii.gz"
    write_nifti(volume((8, 8, 4)), target)
    previous = target.read_bytes()

    def failing_fsync(path: Path, directory: bool = False) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic, "_fsync", failing_fsync)
    with pytest.raises(WriteError, match=rf"ct\.nii\.gz: cannot write \({errno.errorcode[code]}, {os.strerror(code)}\); "
                                         "the previous file is unchanged"):
        write_nifti(volume((8, 8, 4), seed=1), target)
    assert target.read_bytes() == previous and [p.name for p in tmp_path.iterdir()] == ["ct.nii.gz"]
    np.testing.assert_array_equal(read_nifti(target).array, volume((8, 8, 4)).array)


def test_a_library_that_hides_the_os_error_is_still_reported(tmp_path: Path):
    """torch.save turns a disk error into a RuntimeError; the OSError behind it is what the user sees."""
    with pytest.raises(WriteError, match=r"x\.pt: cannot write \(ENOSPC"):
        with atomic_path(tmp_path / "x.pt") as tmp:
            tmp.write_bytes(b"partial")
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
    assert list(tmp_path.iterdir()) == []


def test_other_errors_in_the_block_pass_through_and_leave_nothing(tmp_path: Path):
    with pytest.raises(ValueError, match="not a write problem"):
        with atomic_path(tmp_path / "x.json") as tmp:
            tmp.write_text("{")
            raise ValueError("not a write problem")
    assert list(tmp_path.iterdir()) == [] and issubclass(WriteError, RtsegError)


# --- killed in the middle of a write ----------------------------------------------------------

WRITER_LOOP = """
import sys, numpy as np
from rtseg.io.nifti import write_nifti
from rtseg.io.legacy_npy import write_npy
from rtseg.io.volume import Volume
k = 0
while True:
    k += 1
    arr = np.full((96, 96, 64), k, np.int16)
    write_nifti(Volume(arr, np.eye(4)), sys.argv[1])
    write_npy(arr, sys.argv[2])
    print(k, flush=True)
"""


@pytest.mark.parametrize("delay_s", [0.0, 0.13, 0.41])
def test_kill_9_during_writes_leaves_a_complete_file(tmp_path: Path, delay_s: float):
    """SIGKILL at an arbitrary moment of a write loop: the target is a complete earlier version, and the
    interrupted write's hidden temporary is not taken for a case."""
    import signal
    import sys
    import time

    from rtseg.io.legacy_npy import read_npy, legacy_npy_case_ids

    nii, npy = tmp_path / "p01_ct.nii.gz", tmp_path / "train" / "CT" / "p01.npy"
    (tmp_path / "train" / "SEG").mkdir(parents=True)
    write_npy(np.zeros((2, 2, 2), np.uint8), tmp_path / "train" / "SEG" / "p01.npy")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, str(nii), str(npy)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "1"  # one full round written
        time.sleep(delay_s)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    ct = read_nifti(nii).array
    assert ct.shape == (96, 96, 64) and (ct == ct.flat[0]).all() and ct.flat[0] >= 1
    arr = read_npy(npy).array
    assert (arr == arr.flat[0]).all() and arr.flat[0] in (ct.flat[0], ct.flat[0] - 1)
    (npy.parent / ".p02.npy.k2x9.tmp.npy").write_bytes(b"\x93NUMPY")  # what a kill leaves when it hits a first write
    assert legacy_npy_case_ids(tmp_path / "train") == ["p01"]
