"""``rtseg export``: ONNX (onnxruntime) and TorchScript match PyTorch, on sizes other than the traced one,
and carry the inference metadata."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtseg.cli import main as cli_main
from rtseg.data.normalization import Normalization
from rtseg.data.preprocess import Preprocessing
from rtseg.errors import ConfigError
from rtseg.inference.export import export_model, read_onnx_metadata, read_torchscript_metadata
from rtseg.inference.bundle import InferenceBundle, save_bundle
from rtseg.inference.predictor import load_model
from rtseg.models.spec import build_model, model_spec

NAMES = ["background", "prostate", "bladder"]
ATOL = 1e-3


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    spec = model_spec("ResUnet_3D", 1, len(NAMES), 4, 0.0)
    model = build_model(spec)
    for mod in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(mod, torch.nn.BatchNorm3d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    pre = Preprocessing(Normalization("ct_window", (-1000.0, 1000.0)), (1.5, 1.5, 2.0))
    bundle = InferenceBundle(spec, tuple(NAMES), ((0, 255, 255), (204, 0, 102)), pre, (32, 32, 16), iteration=7)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_bundle(path, bundle, model.state_dict())
    return path


@pytest.fixture(autouse=True)
def only_our_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "rtseg.cli.export" in cli_main.COMMAND_MODULES
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("rtseg.cli.export",))


def reference(ckpt: Path, x: np.ndarray) -> np.ndarray:
    model = load_model(ckpt).model
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def check_metadata(meta: dict, fmt: str) -> None:
    assert meta["format"] == fmt
    assert meta["class_names"] == NAMES
    assert meta["patch_size"] == [32, 32, 16]
    assert meta["preprocessing"]["target_spacing"] == [1.5, 1.5, 2.0]
    assert meta["preprocessing"]["normalization"]["mode"] == "ct_window"
    assert meta["model_spec"]["name"] == "ResUnet_3D"
    assert meta["input"]["spatial_multiple"] == 8
    assert meta["iteration"] == 7


def test_onnx_matches_pytorch_with_dynamic_axes(ckpt: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    out = export_model(ckpt, tmp_path / "model.onnx", format="onnx")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 32, 32, 16), (2, 1, 24, 40, 8)]:  # neither is the size it was exported with
        x = rng.normal(size=shape).astype(np.float32)
        got = sess.run(None, {"image": x})[0]
        assert got.shape == (shape[0], len(NAMES), *shape[2:])
        np.testing.assert_allclose(got, reference(ckpt, x), atol=ATOL, rtol=0)
    meta = read_onnx_metadata(out)
    check_metadata(meta, "onnx")
    assert meta["input"]["dynamic_spatial"] is True
    assert json.loads((tmp_path / "model.onnx.json").read_text()) == meta


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_matches_pytorch(ckpt: Path, tmp_path: Path) -> None:
    out = export_model(ckpt, tmp_path / "model.ts", format="torchscript")
    ts = torch.jit.load(str(out))
    rng = np.random.default_rng(1)
    for shape in [(1, 1, 16, 16, 16), (3, 1, 40, 24, 32)]:
        x = rng.normal(size=shape).astype(np.float32)
        with torch.no_grad():
            got = ts(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, reference(ckpt, x), atol=ATOL, rtol=0)
    meta = read_torchscript_metadata(out)
    check_metadata(meta, "torchscript")
    assert InferenceBundle.from_dict(meta) == load_model(ckpt).bundle  # the checkpoint's contract, whole
    assert json.loads((tmp_path / "model.ts.json").read_text()) == meta


def test_cli_export_and_errors(ckpt: Path, tmp_path: Path, capsys) -> None:
    rc = cli_main.main(["export", "--checkpoint", str(ckpt), "--format", "torchscript", "--out", str(tmp_path / "m.ts")])
    assert rc == 0 and (tmp_path / "m.ts").is_file() and (tmp_path / "m.ts.json").is_file()
    assert "wrote" in capsys.readouterr().out
    rc = cli_main.main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--format", "onnx",
                        "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.pt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(SystemExit):
        cli_main.main(["export", "--checkpoint", str(ckpt), "--format", "tflite", "--out", str(tmp_path / "x")])
    with pytest.raises(ConfigError, match="folder"):
        export_model(ckpt, tmp_path, format="onnx")


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_export_of_a_class_weighted_model_carries_its_prior_correction(ckpt: Path, tmp_path: Path) -> None:
    """The exported graph already adds -log(w): its logits are the corrected ones rtseg predicts with."""
    from rtseg.inference.bundle import load_bundle

    bundle, weights, _ = load_bundle(ckpt)
    weighted = tmp_path / "weighted.pt"
    save_bundle(weighted, bundle.with_prior_correction(torch.tensor([0.05, 3.0, 1.2]), "dice_ce_weighted"), weights)
    out = export_model(weighted, tmp_path / "model.ts", format="torchscript")
    x = np.random.default_rng(2).normal(size=(1, 1, 16, 16, 16)).astype(np.float32)
    with torch.no_grad():
        got = torch.jit.load(str(out))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, reference(weighted, x), atol=ATOL, rtol=0)
    shift = got - reference(ckpt, x)  # against the same weights without the correction
    np.testing.assert_allclose(shift.mean(axis=(0, 2, 3, 4)), -np.log([0.05, 3.0, 1.2]), atol=ATOL)
