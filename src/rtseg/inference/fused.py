"""Inference on the CPU with the residual U-Nets' element-wise steps inside oneDNN's convolutions.

Why: after Conv+BatchNorm folding, a bf16 window of ResUnet_3D spends about a fifth of its time in
element-wise passes over whole feature maps (LeakyReLU after a convolution, the residual add, the
decoder's concatenation). oneDNN applies a LeakyReLU or an add as a post-op of the convolution that
produces the map, so the map is written once instead of written, read and written again. PyTorch's
Inductor uses the same kernels (``torch.ops.mkldnn._convolution_pointwise``); here they are called in
eager mode, so a fresh process pays no compilation.

What is fused (eval mode only, after ``fold_batchnorm``):

- ``InputBlock``: conv -> LeakyReLU in one call; the second conv adds the shortcut as a post-op;
- ``ResidualBlock``: the pre-activation BatchNorm -> LeakyReLU stays (the block's input also feeds the
  shortcut), the LeakyReLU in place; conv -> LeakyReLU in one call; the last conv adds the shortcut;
- ``UpBlock``: ``conv1x1(cat(up, skip))`` becomes ``conv1x1_a(up) + conv1x1_b(skip)`` (the weight split
  in two), the add a post-op: no concatenated map.

The result equals the unfused network up to rounding (tests/test_fused_inference.py). Where the kernels
are missing (a PyTorch without mkldnn), a block has another structure, or the device is not the CPU,
the network is left as it is (``fuse_blocks`` returns how many blocks it fused).
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.blocks import InputBlock, ResidualBlock, UpBlock


def kernels_available() -> bool:
    """Whether this PyTorch has oneDNN's fused convolution kernels."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _conv(x: torch.Tensor, conv: nn.Conv3d, slope: Optional[float] = None,
          add: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x)``, then LeakyReLU(``slope``) or ``+ add``, in one oneDNN call."""
    args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    if add is not None:
        return torch.ops.mkldnn._convolution_pointwise(x, add, conv.weight, conv.bias, *args, "add", None, None, [],
                                                       None)
    if slope is not None:
        return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, *args, "leaky_relu", [slope], "")
    return torch.ops.mkldnn._convolution_pointwise(x, conv.weight, conv.bias, *args, "none", [], "")


def _plain_conv(m: nn.Module) -> bool:
    return (type(m) is nn.Conv3d and isinstance(m.padding, tuple) and m.padding_mode == "zeros"
            and m.weight.dtype in (torch.float32, torch.bfloat16))


def _layers(seq: nn.Sequential, kinds: tuple[type, ...]) -> Optional[list[nn.Module]]:
    """``seq``'s layers without Identity/Dropout (inactive in eval), if they are exactly of ``kinds``."""
    kept = [m for m in seq if not isinstance(m, (nn.Identity, nn.Dropout3d, nn.Dropout))]
    if len(kept) != len(kinds) or not all(type(m) is k for m, k in zip(kept, kinds)):
        return None
    if not all(_plain_conv(m) for m in kept if type(m) is nn.Conv3d):
        return None
    return kept


class FusedInputBlock(nn.Module):
    def __init__(self, conv1: nn.Conv3d, act: nn.LeakyReLU, conv2: nn.Conv3d, skip: nn.Conv3d) -> None:
        super().__init__()
        self.conv1, self.conv2, self.skip, self.slope = conv1, conv2, skip, float(act.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv(_conv(x, self.conv1, self.slope), self.conv2, add=_conv(x, self.skip))


class FusedResidualBlock(nn.Module):
    def __init__(self, bn: nn.BatchNorm3d, act1: nn.LeakyReLU, conv1: nn.Conv3d, act2: nn.LeakyReLU,
                 conv2: nn.Conv3d, skip: nn.Conv3d) -> None:
        super().__init__()
        self.bn, self.conv1, self.conv2, self.skip = bn, conv1, conv2, skip
        self.slope1, self.slope2 = float(act1.negative_slope), float(act2.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu_(self.bn(x), self.slope1)
        return _conv(_conv(h, self.conv1, self.slope2), self.conv2, add=_conv(x, self.skip))


class FusedUpBlock(nn.Module):
    def __init__(self, block: UpBlock, res: nn.Module) -> None:
        super().__init__()
        half = block.up.out_channels
        self.up, self.res = block.up, res
        self.fuse_up = _split_conv(block.fuse, slice(0, half), keep_bias=True)
        self.fuse_skip = _split_conv(block.fuse, slice(half, None), keep_bias=False)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        return self.res(_conv(skip, self.fuse_skip, add=_conv(up, self.fuse_up)))


def _split_conv(conv: nn.Conv3d, channels: slice, keep_bias: bool) -> nn.Conv3d:
    """The part of a 1x1x1 ``conv`` that reads ``channels`` of its input (cat(a, b) -> conv_a(a) + conv_b(b))."""
    weight = conv.weight[:, channels]
    part = nn.Conv3d(weight.shape[1], conv.out_channels, kernel_size=1, bias=keep_bias and conv.bias is not None)
    part = part.to(dtype=conv.weight.dtype)
    part.weight = nn.Parameter(weight.detach().clone(memory_format=torch.contiguous_format), requires_grad=False)
    if part.bias is not None:
        part.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)  # type: ignore[union-attr]
    return part


def _fused(block: nn.Module) -> Optional[nn.Module]:
    """The fused twin of one block, or None where its structure is not the expected one."""
    if type(block) is InputBlock:
        body = _layers(block.body, (nn.Conv3d, nn.LeakyReLU, nn.Conv3d))
        skip = _layers(block.skip, (nn.Conv3d,))
        return None if body is None or skip is None else FusedInputBlock(body[0], body[1], body[2], skip[0])
    if type(block) is ResidualBlock:
        body = _layers(block.body, (nn.BatchNorm3d, nn.LeakyReLU, nn.Conv3d, nn.LeakyReLU, nn.Conv3d))
        skip = _layers(block.skip, (nn.Conv3d,))
        return None if body is None or skip is None else FusedResidualBlock(*body, skip[0])
    if type(block) is UpBlock and _plain_conv(block.fuse) and block.fuse.kernel_size == (1, 1, 1):
        res = _fused(block.res)
        return None if res is None else FusedUpBlock(block, res)
    return None


def fuse_blocks(net: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``net`` (eval mode, BatchNorm already folded) with its residual blocks fused; (net, blocks fused).

    ``net`` itself is returned unchanged (0) where the kernels are missing or no block matches."""
    if not kernels_available():
        return net, 0
    out = copy.deepcopy(net).eval()
    count = _replace_blocks(out)
    return (out, count) if count else (net, 0)


def _replace_blocks(module: nn.Module) -> int:
    """Replace each fusable block under ``module`` by its twin (not descending into a replaced block)."""
    count = 0
    for name, child in list(module.named_children()):
        fused = _fused(child)
        if fused is None:
            count += _replace_blocks(child)
        else:
            setattr(module, name, fused)
            count += 1
    return count


__all__ = ["FusedInputBlock", "FusedResidualBlock", "FusedUpBlock", "fuse_blocks", "kernels_available"]
