"""Inference precision: the switch (``rtseg.device.resolve_precision``, ``--precision``, the node's key), the
bf16 CPU path on a tiny net, the one-pass way back, and the bf16-vs-fp32 agreement machinery.

bf16 keeps 8 significant bits: through the tiny U-Net its labels must agree with fp32's on >= 99 % of the
phantom's voxels (measured 100 %); on the real benchmarks the bar is 99.9 % (benchmarks/bf16_agreement.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from predict_helpers import NAMES, ORIENTATIONS, ckpt, ckpt_coarse, phantom, reoriented  # noqa: F401

from rtseg.data.preprocess import class_argmax
from rtseg.device import CPU_BF16_ENV, cpu_bf16_flags, cpu_has_native_bf16, resolve_precision
from rtseg.errors import ConfigError
from rtseg.inference.precision_check import compare_labels, predict_both, summarize
from rtseg.inference.predictor import NetworkOptions, Predictor, load_model
from rtseg.io.volume import Volume, affine_from_spacing

CPU = torch.device("cpu")


def test_cpuinfo_flags_are_read(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
    assert cpu_bf16_flags(str(info)) == ("avx512_bf16",)
    info2 = tmp_path / "cpuinfo2"
    info2.write_text("flags\t\t: fpu sse avx2 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(str(info2)) == ("amx_bf16",)
    info3 = tmp_path / "cpuinfo3"
    info3.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_bf16_flags(str(info3)) == ()
    assert cpu_bf16_flags(str(tmp_path / "absent")) == ()


def test_auto_follows_the_cpu_and_fp32_bf16_are_taken_as_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert cpu_has_native_bf16() and resolve_precision(CPU, "auto") == torch.bfloat16
    assert resolve_precision(CPU, "auto", amp=False) == torch.float32  # TRAINING.AMP false keeps fp32
    assert resolve_precision(CPU, "fp32") == torch.float32
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert resolve_precision(CPU, "auto") == torch.float32 and resolve_precision(CPU, "bf16") == torch.bfloat16
    monkeypatch.delenv(CPU_BF16_ENV)
    real = bool(cpu_bf16_flags()) and torch.backends.cpu.get_cpu_capability().startswith(("AVX512", "AMX"))
    assert cpu_has_native_bf16() == real  # what /proc/cpuinfo and torch say about this machine
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        resolve_precision(CPU, "fp16")
    with pytest.raises(ConfigError, match="precision"):
        NetworkOptions(precision="half")


def test_bf16_predictor_casts_a_copy_and_agrees_with_fp32(ckpt_coarse: Path) -> None:  # noqa: F811
    loaded = load_model(ckpt_coarse)
    vol = Volume(phantom(shape=(44, 40, 24)), affine_from_spacing((1.2, 1.3, 3.0)))
    bf16 = Predictor(loaded, precision="bf16")
    assert bf16.precision == "bf16" and Predictor(loaded, precision="fp32").precision == "fp32"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())  # the checkpoint's model stays fp32
    fp32_labels, bf16_labels = predict_both(loaded, vol)
    np.testing.assert_array_equal(bf16_labels, bf16.predict_labels(vol))
    assert bf16.stats.precision == "bf16"
    truth = np.where(vol.array < -500, 0, np.where(vol.array > 200, 2, 1))
    row = compare_labels("phantom", fp32_labels, bf16_labels, truth)
    s = summarize([row])
    assert s["equal_voxels"] >= 0.99 and len(np.unique(bf16_labels)) >= 2
    assert s["mean_dice_fp32"] > 0.3 and abs(s["mean_dice_bf16"] - s["mean_dice_fp32"]) <= 0.02


def test_agreement_figures_against_hand_counts() -> None:
    a = np.zeros((4, 5, 2), np.uint8)
    b = a.copy()
    t = a.copy()
    a[0, :, :] = 1  # 10 voxels of organ 1
    b[0, :4, :] = 1  # 8 of them in b, 2 voxels differ
    t[0, :, :] = 1
    t[1, 0, 0] = 2  # organ 2 in the truth only: Dice 0 for both
    row = compare_labels("x", a, b, t)
    assert row.voxels == 40 and row.equal == 38
    assert row.dice_between == {1: pytest.approx(2 * 8 / 18)}
    assert row.dice_fp32 == {1: 1.0, 2: 0.0} and row.dice_bf16 == {1: pytest.approx(16 / 18), 2: 0.0}
    s = summarize([row, compare_labels("y", t, t, t, organs=[1])])
    assert s["equal_voxels"] == pytest.approx(78 / 80)
    assert s["mean_dice_fp32"] == pytest.approx((1 + 0 + 1) / 3)
    assert s["mean_dice_shift"] == pytest.approx((1 - 16 / 18) / 3)
    assert not s["voxels_ok"] and not s["dice_ok"] and not s["ok"]


def test_class_argmax_is_numpys_argmax_with_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(5, 7, 6, 3)).astype(np.float32)  # many ties: the first class must win
    labels, best = class_argmax(torch.from_numpy(x))
    np.testing.assert_array_equal(labels.numpy(), np.argmax(x, axis=0))
    np.testing.assert_array_equal(best.numpy(), x.max(0))


@pytest.mark.parametrize("orientation", ["ras", "permuted_flipped"])
def test_one_pass_way_back_equals_labels_and_probabilities_apart(ckpt_coarse: Path, orientation: str) -> None:  # noqa: F811
    """restore_full (what predict_full runs) against restore_labels + restore_probabilities, box and reorientation."""
    vol = Volume(phantom(), affine_from_spacing((1.5, 1.5, 2.0)))
    if orientation != "ras":
        vol = reoriented(vol, ORIENTATIONS[orientation])
    predictor = Predictor(load_model(ckpt_coarse), air_margin_mm=2.0, precision="fp32")
    logits, info, box = predictor.network_logits(vol)
    assert box is not None and tuple(s.stop - s.start for s in box) != info.network_shape  # a real body box
    labels, probs = info.restore_full(logits, box, temperature=1.7)
    np.testing.assert_array_equal(labels, info.restore_labels(logits, box))
    np.testing.assert_allclose(probs, info.restore_probabilities(logits / 1.7, box), rtol=1e-5, atol=1e-7)
    assert labels.shape == vol.shape and len(np.unique(labels)) >= 2


def test_node_and_cli_take_the_precision_key(tmp_path: Path, ckpt: Path) -> None:  # noqa: F811
    from rtseg.cli.main import build_parser
    from rtseg.serve.config import load_serve_config
    from rtseg.serve.contour import Contourer

    keys = {"store": str(tmp_path / "store"), "checkpoint": str(ckpt), "destination": ["folder:" + str(tmp_path / "o")]}
    assert load_serve_config(None, keys).precision == "auto"
    assert load_serve_config(None, {**keys, "precision": "bf16"}).precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        load_serve_config(None, {**keys, "precision": "fp16"})
    assert Contourer(ckpt, "cpu", "bf16").predictor.precision == "bf16"
    assert Contourer(ckpt, "cpu").predictor.precision == "fp32"  # auto, with RTSEG_CPU_BF16=0 (conftest)
    args = build_parser().parse_args(["predict", "--checkpoint", "c.pt", "--input", "i", "--output", "o",
                                      "--precision", "fp32"])
    assert args.precision == "fp32"
    assert build_parser().parse_args(["val", "-c", "x.yml", "--checkpoint", "c.pt"]).precision == "auto"
