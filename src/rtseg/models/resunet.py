"""The original code base's 3D residual U-Nets: ResUnet_3D (3 downsamplings) and Deeper_ResUnet_3D (4)."""
from __future__ import annotations

import torch
import torch.nn as nn

from rtseg.models.blocks import DecoderNet, DeepSupervisionHeads, InputBlock, Logits, ResidualBlock, UpBlock, run_padded
from rtseg.models.registry import register_model


def _check_args(in_channels: int, n_classes: int, base_filters: int, depth: int, dropout: float) -> None:
    for name, v in (("in_channels", in_channels), ("n_classes", n_classes), ("base_filters", base_filters), ("depth", depth)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2 (background + organs), got {n_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


class ResUNet3D(DecoderNet):
    """Residual U-Net; returns logits (N, n_classes, D, H, W).

    Inputs whose spatial size is not a multiple of ``2**depth`` are zero-padded
    and the logits cropped back, so any size works. With ``deep_supervision`` the
    training-mode output is a list: the full-resolution logits, then the logits of
    the decoder's scales 1/2, 1/4, ... (``depth - 1`` of them); eval mode always
    returns the one full-resolution tensor, so inference and export never see the list.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 6, base_filters: int = 64, depth: int = 3, dropout: float = 0.2,
                 deep_supervision: bool = False) -> None:
        super().__init__()
        _check_args(in_channels, n_classes, base_filters, depth, dropout)
        if not isinstance(deep_supervision, bool):
            raise ValueError(f"deep_supervision must be true or false, got {deep_supervision!r}")
        self.depth = depth
        widths = [base_filters * 2**i for i in range(depth + 1)]
        self.inc = InputBlock(in_channels, widths[0], dropout)
        self.down = nn.ModuleList(ResidualBlock(widths[i], widths[i + 1], 2, dropout) for i in range(depth))
        self.up = nn.ModuleList(UpBlock(widths[i + 1], dropout) for i in reversed(range(depth)))
        self.head = nn.Conv3d(widths[0], n_classes, kernel_size=1)
        self.ds_heads = DeepSupervisionHeads(widths[1:depth], n_classes) if deep_supervision else None


    def forward(self, x: torch.Tensor) -> Logits:
        return run_padded(x, self.stride, self.logits)


@register_model("ResUnet_3D")
def resunet_3d(in_channels: int = 1, n_classes: int = 6, base_filters: int = 64, dropout: float = 0.2,
               deep_supervision: bool = False) -> ResUNet3D:
    return ResUNet3D(in_channels, n_classes, base_filters, depth=3, dropout=dropout, deep_supervision=deep_supervision)


@register_model("Deeper_ResUnet_3D")
def deeper_resunet_3d(in_channels: int = 1, n_classes: int = 6, base_filters: int = 64, dropout: float = 0.2,
                      deep_supervision: bool = False) -> ResUNet3D:
    return ResUNet3D(in_channels, n_classes, base_filters, depth=4, dropout=dropout, deep_supervision=deep_supervision)
