"""A wrong file given as a checkpoint gets one line in rtseg's words (what the file is, what was expected), never
PyTorch's unpickler text: that text advises loading with ``weights_only=False``, which runs pickled code.

Through the real command line: ``rtseg predict`` in its own process for every kind, ``rtseg val`` and
``rtseg export`` through ``main`` with the process's stderr captured (warnings and log lines included)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import make_checkpoint, phantom

from rtseg.cli.main import main
from rtseg.errors import DataError
from rtseg.io.checkpoint import load_checkpoint
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume, affine_from_spacing

ROOT = Path(__file__).resolve().parents[1]
PHANTOM_CONFIG = ROOT / "configs" / "phantoms.yml"


def _event_file(run: Path) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run / "tensorboard"))
    writer.add_scalar("train/loss", 1.0, 0)
    writer.close()
    return next((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    good = make_checkpoint(d / "run" / "checkpoints" / "best.pt")
    vol = Volume(phantom((24, 20, 16)), affine_from_spacing((2.0, 2.0, 2.0)))
    write_nifti(vol, d / "ct.nii.gz")
    write_nifti(vol, d / "image.nii.gz")
    (d / "empty.pt").write_bytes(b"")
    data = good.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    (d / "notes.txt").write_text("best model: run 3, Dice 0.81\n")
    (d / "no_checkpoints").mkdir()
    (d / "no_checkpoints" / "train.log").write_text("iteration 1\n")
    return {"good": good, "input": d / "ct.nii.gz", "nifti": d / "image.nii.gz", "empty": d / "empty.pt",
            "truncated": d / "truncated.pt", "event": _event_file(d / "run"), "text": d / "notes.txt",
            "folder": d / "no_checkpoints"}


# what each kind of file is called in the one error line
FOUND = {
    "nifti": "found a NIfTI image",
    "empty": "found an empty file (0 bytes)",
    "truncated": "found a truncated zip archive",
    "event": "found a TensorBoard event file",
    "text": "found a plain text file",
    "folder": "found a folder with no checkpoint in it",
}
EXPECTED = "expected a checkpoint written by 'rtseg train'"


def _one_line(stderr: str, command: str, path: Path, kind: str) -> str:
    assert "weights_only" not in stderr and "Traceback" not in stderr and "torch.load" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(f"rtseg {command}: error: ")]
    assert len(errors) == 1, stderr
    line = errors[0]
    assert str(path) in line and FOUND[kind] in line and EXPECTED in line, line
    return line


@pytest.mark.parametrize("kind", sorted(FOUND))
def test_predict_names_the_wrong_file_in_one_line(files, kind, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "rtseg", "predict", "--checkpoint", str(files[kind]),
                           "--input", str(files["input"]), "--output", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    line = _one_line(proc.stderr, "predict", files[kind], kind)
    assert not out.exists()
    if kind == "event":  # the event file lies in a run folder: its checkpoint is named
        assert f"this run's checkpoint is {files['good']}" in line


@pytest.mark.parametrize("kind", sorted(FOUND))
def test_val_and_export_name_the_wrong_file_in_one_line(files, kind, tmp_path, capfd):
    assert main(["val", "-c", str(PHANTOM_CONFIG), "--checkpoint", str(files[kind]), "--out", str(tmp_path / "val")]) == 2
    _one_line(capfd.readouterr().err, "val", files[kind], kind)
    onnx = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(files[kind]), "--format", "onnx", "--out", str(onnx)]) == 2
    _one_line(capfd.readouterr().err, "export", files[kind], kind)
    assert not onnx.exists()


def test_the_good_checkpoint_still_loads(files):
    data = load_checkpoint(files["good"])
    assert data["rtseg_format"] == 1 and isinstance(data["model"], dict)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_other_kinds_and_torch_failures_in_rtseg_words(files, tmp_path):
    """Files PyTorch reads part way (a truncated legacy pickle, one with pickled objects), a TorchScript archive
    and a run folder: each a DataError in rtseg's words, none with PyTorch's advice."""
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": {"w": torch.zeros(64)}}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:40])
    objects = tmp_path / "objects.pt"
    torch.save({"model": {"w": np.float64}}, objects)  # a class: a pickled global
    script = tmp_path / "net.ts"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(script))
    np.save(tmp_path / "arr.npy", np.zeros(3))
    expected = {
        legacy: "found a truncated PyTorch file",
        objects: "found a PyTorch file that pickles Python objects (numpy.float64)",
        script: "found a TorchScript archive",
        tmp_path / "arr.npy": "found a NumPy array (.npy)",
        files["good"].parent.parent: f"found a run folder; {EXPECTED}",
    }
    for path, text in expected.items():
        with pytest.raises(DataError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and text in message and "weights_only" not in message, message
        assert "\n" not in message


def test_any_cut_or_damage_of_a_checkpoint_is_one_rtseg_line(files, tmp_path):
    """The good checkpoint cut at 25 lengths, and 64 random bytes written at 40 places: each is one DataError line
    without PyTorch's text, or (damage in the zip's padding) loads with every weight unchanged. torch.load does not
    check the zip's CRC-32s: without that check, damaged weights would load silently."""
    data = files["good"].read_bytes()
    good = load_checkpoint(files["good"])["model"]
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.pt"
    cuts = sorted(set(int(c) for c in np.linspace(1, len(data) - 1, 25)))
    damaged = [data[:cut] for cut in cuts]
    for at in rng.integers(0, len(data) - 64, 40):
        b = bytearray(data)
        b[at:at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        damaged.append(bytes(b))
    refused = 0
    for content in damaged:
        bad.write_bytes(content)
        try:
            loaded = load_checkpoint(bad)["model"]
        except DataError as exc:
            refused += 1
            message = str(exc)
            assert message.startswith(f"{bad}: found ") and "weights_only" not in message and "\n" not in message, message
            continue
        assert loaded.keys() == good.keys() and all(torch.equal(loaded[k], good[k]) for k in good)
    assert refused >= len(cuts) + 30  # every cut, and nearly every overwrite (the weights are most of the file)
