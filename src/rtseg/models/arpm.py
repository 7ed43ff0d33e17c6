"""ARPM-net's segmenter (Zhang et al., Med. Phys. 2020): multi-residual U-Net, multi-scale pooling, MRF head.

The paper specifies the ingredients, not every layer; choices made here:
two residual blocks per encoder and decoder level (the "multi-residual" part),
a pyramid of average pools at the bottleneck instead of atrous convolutions
(context at several scales without keeping large dilated feature maps), a
1x1x1 head and a trainable mean-field MRF on the logits.  The discriminator
and the adversarial training step live in ``discriminator.py`` and
``rtseg.training.adversarial``; only this segmenter runs at inference.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.blocks import DecoderNet, DeepSupervisionHeads, InputBlock, Logits, ResidualBlock, UpBlock, run_padded
from rtseg.models.mrf import MeanFieldMRF
from rtseg.models.registry import register_model


class MultiScalePooling(nn.Module):
    """PSP-like context block: parallel avg-pools -> 1x1x1 conv -> trilinear upsample, concat with input, 1x1x1 fuse.

    A pool of scale ``s`` averages ``s``-voxel cubes (``ceil_mode``, so any input size
    works; scale 1 is a plain 1x1x1 branch).  The branches have no normalisation, so a
    pooled map of a single voxel at batch size 1 is fine.  Output has the input's shape.
    Note: trilinear upsampling has no deterministic CUDA backward.
    """

    def __init__(self, channels: int, scales: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        scales = tuple(scales)
        if not scales or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in scales):
            raise ValueError(f"scales must be a non-empty sequence of positive integers, got {list(scales)}")
        self.scales = scales
        branch = max(channels // len(scales), 1)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv3d(channels, branch, kernel_size=1), nn.LeakyReLU(inplace=True)) for _ in scales
        )
        self.fuse = nn.Sequential(
            nn.Conv3d(channels + branch * len(scales), channels, kernel_size=1, bias=False),
            nn.BatchNorm3d(channels),
            nn.LeakyReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        outs = [x]
        for s, branch in zip(self.scales, self.branches):
            if s == 1:
                outs.append(branch(x))
                continue
            k = [min(s, int(d)) for d in size]
            pooled = branch(F.avg_pool3d(x, kernel_size=k, stride=k, ceil_mode=True))
            outs.append(F.interpolate(pooled, size=size, mode="trilinear", align_corners=False))
        return self.fuse(torch.cat(outs, dim=1))


class ARPMNet(DecoderNet):
    """Multi-residual 3D U-Net + multi-scale pooling bottleneck + MRF; returns logits (N, n_classes, D, H, W).

    Inputs whose spatial size is not a multiple of ``2**depth`` are zero-padded and the
    logits cropped back (before the MRF, so its messages never cross into the padding).
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 6,
        base_filters: int = 64,
        dropout: float = 0.2,
        mrf_iterations: int = 5,
        depth: int = 3,
        pool_scales: Sequence[int] = (1, 2, 4),
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("n_classes", n_classes), ("base_filters", base_filters), ("depth", depth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2 (background + organs), got {n_classes}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not isinstance(mrf_iterations, int) or isinstance(mrf_iterations, bool) or mrf_iterations < 0:
            raise ValueError(f"mrf_iterations must be a non-negative integer (0 disables the MRF), got {mrf_iterations!r}")
        self.depth = depth
        widths = [base_filters * 2**i for i in range(depth + 1)]
        self.inc = nn.Sequential(InputBlock(in_channels, widths[0], dropout), ResidualBlock(widths[0], widths[0], 1, dropout))
        self.down = nn.ModuleList(
            nn.Sequential(
                ResidualBlock(widths[i], widths[i + 1], 2, dropout),
                ResidualBlock(widths[i + 1], widths[i + 1], 1, dropout),
            )
            for i in range(depth)
        )
        self.context = MultiScalePooling(widths[depth], pool_scales)
        self.up = nn.ModuleList(UpBlock(widths[i + 1], dropout) for i in reversed(range(depth)))
        self.up_res = nn.ModuleList(ResidualBlock(widths[i], widths[i], 1, dropout) for i in reversed(range(depth)))
        self.head = nn.Conv3d(widths[0], n_classes, kernel_size=1)
        self.mrf = MeanFieldMRF(n_classes, mrf_iterations)
        if not isinstance(deep_supervision, bool):
            raise ValueError(f"deep_supervision must be true or false, got {deep_supervision!r}")
        self.ds_heads = DeepSupervisionHeads(widths[1:depth], n_classes) if deep_supervision else None

    def bottleneck(self, h: torch.Tensor) -> torch.Tensor:
        return self.context(h)

    def up_step(self, level: int, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.up_res[level](self.up[level](h, skip))

    def forward(self, x: torch.Tensor) -> Logits:
        """The MRF refines the full-resolution logits only; deep supervision's lower scales are the heads' raw logits."""
        out = run_padded(x, self.stride, self.logits)
        if isinstance(out, torch.Tensor):
            return self.mrf(out)
        return [self.mrf(out[0]), *out[1:]]


@register_model("ARPM_net")
def arpm_net(
    in_channels: int = 1, n_classes: int = 6, base_filters: int = 64, dropout: float = 0.2, mrf_iterations: int = 5,
    deep_supervision: bool = False,
) -> ARPMNet:
    return ARPMNet(in_channels, n_classes, base_filters, dropout, mrf_iterations, deep_supervision=deep_supervision)
