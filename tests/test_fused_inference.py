"""CPU inference with the residual blocks' LeakyReLU, residual add and decoder concatenation inside oneDNN's
convolutions (``rtseg.inference.fused``): the same logits as the plain folded network, for every U-Net of the
registry, and the plain network where the kernels or the structure are missing."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from rtseg.inference import fused
from rtseg.inference.predictor import fold_batchnorm
from rtseg.inference.sliding_window import prepare_network
from rtseg.models.registry import create_model

pytestmark = pytest.mark.skipif(not fused.kernels_available(), reason="this PyTorch has no oneDNN fused kernels")


def trained_like(name: str) -> nn.Module:
    """A network with non-trivial BatchNorm statistics and affine parameters (what folding must carry)."""
    torch.manual_seed(3)
    net = create_model(name, in_channels=1, n_classes=4, base_filters=4, dropout=0.1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
    return net.eval()


@pytest.mark.parametrize("name,blocks", [("ResUnet_3D", 7), ("Deeper_ResUnet_3D", 9), ("ARPM_net", 14)])
@pytest.mark.parametrize("fmt", [torch.channels_last_3d, torch.contiguous_format])
def test_fused_network_gives_the_plain_logits(name: str, blocks: int, fmt: torch.memory_format) -> None:
    net = trained_like(name)
    plain = fold_batchnorm(net).to(memory_format=fmt)
    fast, count = fused.fuse_blocks(plain)
    assert count == blocks and fast is not plain
    assert not any(type(m).__name__ in ("InputBlock", "ResidualBlock", "UpBlock") for m in fast.modules())
    x = torch.randn(2, 1, 32, 32, 16).to(memory_format=fmt)
    with torch.inference_mode():
        ref, out = net(x), fast(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.999


def test_the_cpu_fp32_path_fuses_and_bf16_or_unfolded_networks_stay_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    net = fold_batchnorm(trained_like("ResUnet_3D"))
    cpu = torch.device("cpu")
    kinds = {type(m).__name__ for m in prepare_network(net, cpu, torch.float32, torch.channels_last_3d).modules()}
    assert "FusedResidualBlock" in kinds and "ResidualBlock" not in kinds
    kinds = {type(m).__name__ for m in prepare_network(net, cpu, torch.bfloat16, torch.channels_last_3d).modules()}
    assert "FusedResidualBlock" not in kinds  # bf16 windows gain nothing from it (docs/PERFORMANCE.md)
    unfolded = trained_like("ResUnet_3D")  # BatchNorm after each conv: not the structure fused here
    assert fused.fuse_blocks(unfolded) == (unfolded, 0)
    monkeypatch.setattr(fused, "kernels_available", lambda: False)
    assert fused.fuse_blocks(net) == (net, 0)
