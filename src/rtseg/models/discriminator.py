"""ARPM-net's discriminator: tells CT x ground truth (real) from CT x prediction (fake).

The input is the element-wise product of the CT with each class channel of a
segmentation (``discriminator_input``), so the discriminator judges whether the
intensities inside each predicted organ look like those inside a contoured one.
Spectral normalisation on every conv keeps it Lipschitz-bounded (a stable
adversary without batch statistics, so it works at batch size 1 and on any
patch size; instance norm would fail on 1-voxel maps).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


def discriminator_input(ct: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``ct`` (N, 1, D, H, W) times ``probs`` (N, C, D, H, W) -> (N, C, D, H, W).

    With several input channels the first is taken as the CT.
    """
    if ct.dim() != 5 or probs.dim() != 5:
        raise ValueError(f"expected 5-D tensors (N, C, D, H, W), got ct {tuple(ct.shape)} and probs {tuple(probs.shape)}")
    if ct.shape[0] != probs.shape[0] or ct.shape[2:] != probs.shape[2:]:
        raise ValueError(f"ct {tuple(ct.shape)} and probs {tuple(probs.shape)} differ in batch or spatial size")
    return ct[:, :1].to(probs.dtype) * probs


class Discriminator3D(nn.Module):
    """PatchGAN-style 3D discriminator; ``forward`` returns a patch score map (N, 1, d, h, w).

    Three stride-2 3x3x3 convs (widths f, 2f, 4f), one stride-1 conv (8f), then a 3x3x3 conv to
    one channel: each output voxel scores a 47-voxel-wide receptive field, d = ceil(D / 8).  All convs
    are spectrally normalised, activations LeakyReLU(0.2), no normalisation layers.  ``score``
    averages the map to one real/fake score per sample.  Scores are unbounded (LSGAN targets
    0/1, or hinge margins), not probabilities.
    """

    def __init__(self, in_channels: int = 6, base_filters: int = 16) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("base_filters", base_filters)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        f = base_filters
        widths = [in_channels, f, 2 * f, 4 * f]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [spectral_norm(nn.Conv3d(cin, cout, kernel_size=3, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        layers += [spectral_norm(nn.Conv3d(4 * f, 8 * f, kernel_size=3, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
        layers += [spectral_norm(nn.Conv3d(8 * f, 1, kernel_size=3, padding=1))]
        self.net = nn.Sequential(*layers)
        self._convs = [m for m in self.net if isinstance(m, nn.Conv3d)]
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"Discriminator3D expects (N, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        # Spectral norms in float32 whatever the autocast (its power iteration mixes dtypes under
        # CUDA autocast otherwise); cached() reuses the normalised weights in the convs below.
        with parametrize.cached():
            with torch.autocast(device_type=x.device.type, enabled=False):
                for conv in self._convs:
                    _ = conv.weight
            return self.net(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """One score per sample (N,): the patch map's mean."""
        return self.forward(x).flatten(1).mean(dim=1)
