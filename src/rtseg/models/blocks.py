"""Building blocks of the original code base's residual U-Nets (pre-activation residual units)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, stride=stride, padding=1)


class InputBlock(nn.Module):
    """conv -> BN -> LeakyReLU -> dropout -> conv, plus a conv -> BN shortcut."""

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3(cin, cout), nn.BatchNorm3d(cout), nn.LeakyReLU(inplace=True), nn.Dropout3d(dropout), conv3(cout, cout)
        )
        self.skip = nn.Sequential(conv3(cin, cout), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class ResidualBlock(nn.Module):
    """BN -> LeakyReLU -> dropout -> conv(stride) -> BN -> LeakyReLU -> dropout -> conv, plus conv(stride) -> BN shortcut.

    Dropout is an ``nn.Module`` so ``model.eval()`` switches it off (the original code base kept it on at evaluation).
    """

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm3d(cin),
            nn.LeakyReLU(inplace=False),
            nn.Dropout3d(dropout),
            conv3(cin, cout, stride),
            nn.BatchNorm3d(cout),
            nn.LeakyReLU(inplace=True),
            nn.Dropout3d(dropout),
            conv3(cout, cout),
        )
        self.skip = nn.Sequential(conv3(cin, cout, stride), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class UpBlock(nn.Module):
    """Transposed conv halves the width, concat the skip, 1x1x1 conv back to that width, residual block."""

    def __init__(self, cin: int, dropout: float) -> None:
        super().__init__()
        cout = cin // 2
        self.up = nn.ConvTranspose3d(cin, cout, kernel_size=2, stride=2)
        self.fuse = nn.Conv3d(cout * 2, cout, kernel_size=1)
        self.res = ResidualBlock(cout, cout, 1, dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.res(self.fuse(torch.cat([self.up(x), skip], dim=1)))


Logits = Union[torch.Tensor, list[torch.Tensor]]
"""One logits tensor, or (deep supervision, training mode) full resolution first, then each lower scale."""


def run_padded(x: torch.Tensor, stride: int, fn: Callable[[torch.Tensor], Logits]) -> Logits:
    """Zero-pad the spatial size to a multiple of ``stride``, apply ``fn``, crop the output(s) back.

    Output ``k`` of a list is at scale ``1 / 2**k`` and is cropped to the ceiling of the input size there."""
    size = x.shape[2:]
    pad = [(-s) % stride for s in size]
    if not any(pad):
        return fn(x)
    out = fn(F.pad(x, [0, pad[2], 0, pad[1], 0, pad[0]]))
    if isinstance(out, torch.Tensor):
        return out[:, :, : size[0], : size[1], : size[2]]
    return [o[:, :, : -(-size[0] // 2**k), : -(-size[1] // 2**k), : -(-size[2] // 2**k)] for k, o in enumerate(out)]


class DeepSupervisionHeads(nn.Module):
    """1x1x1 heads on the decoder's lower scales (nnU-Net's deep supervision); used in training mode only.

    ``widths[i]`` is the decoder width at scale ``1 / 2**(i + 1)``."""

    def __init__(self, widths: Sequence[int], n_classes: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv3d(w, n_classes, kernel_size=1) for w in widths)

    def forward(self, full: torch.Tensor, lower: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``full``: the full-resolution logits; ``lower``: decoder features from scale 1/2 downwards."""
        return [full, *(head(h) for head, h in zip(self.heads, lower))]


class DecoderNet(nn.Module):
    """A U-Net whose ``decoder`` gives its outputs full resolution first; ``head`` makes the logits and, in
    training mode with deep supervision, ``ds_heads`` the lower scales' (one place for both U-Nets)."""

    head: nn.Conv3d
    ds_heads: Optional[DeepSupervisionHeads]

    inc: nn.Module
    down: nn.ModuleList
    up: nn.ModuleList
    depth: int

    @property
    def stride(self) -> int:
        return 2**self.depth

    def bottleneck(self, h: torch.Tensor) -> torch.Tensor:
        """What the deepest features pass through before the decoder (ARPM-net: multi-scale pooling)."""
        return h

    def up_step(self, level: int, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """One decoder level: upsample ``h`` and merge the encoder's ``skip``."""
        return self.up[level](h, skip)

    def decoder(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The decoder's outputs, full resolution first, then scales 1/2, 1/4, ... (before any head)."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        h = self.bottleneck(skips.pop())
        levels = []
        for level in range(len(self.up)):
            h = self.up_step(level, h, skips.pop())
            levels.append(h)
        return levels[::-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder output before the 1x1x1 head (for heads that refine it, e.g. ARPM-net)."""
        return self.decoder(x)[0]

    def logits(self, x: torch.Tensor) -> Logits:
        if self.ds_heads is None or not self.training:
            return self.head(self.features(x))
        levels = self.decoder(x)
        return self.ds_heads(self.head(levels[0]), levels[1:])


def first_logits(out: Logits) -> torch.Tensor:
    """The full-resolution logits of a model's output (a tensor, or deep supervision's list)."""
    return out if isinstance(out, torch.Tensor) else out[0]


class LogitOffset(nn.Module):
    """``backbone``'s logits plus a fixed per-class offset: how a class-weighted model's prior is undone at
    inference (``log p_c = log q_c - log w_c`` up to a constant, for the weights ``w`` it was trained with)."""

    def __init__(self, backbone: nn.Module, offset: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("offset", torch.tensor([float(v) for v in offset]).view(1, -1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = first_logits(self.backbone(x))
        return out + self.offset.to(out.dtype)
