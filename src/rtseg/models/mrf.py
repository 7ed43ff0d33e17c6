"""Mean-field Markov Random Field refinement of segmentation logits (CRF-as-RNN style, 3D).

Mean-field inference on a Potts-like MRF over the voxel grid: every iteration
each voxel collects its neighbours' class probabilities (message passing), a
class-compatibility matrix turns those into energies, and they are subtracted
from the unaries (the network's logits).  ``MeanFieldMRF`` learns the spatial
filter and the compatibility; ``mrf_smooth`` is the fixed Potts version for
post-processing.  Borders are replicate-padded so a voxel on the volume edge
sees the same number of neighbours as one inside.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.models.blocks import Logits


def _check_int(name: str, v: object, minimum: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return v


def _check_kernel(kernel_size: object) -> int:
    k = _check_int("kernel_size", kernel_size, 3)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the voxel sits at the centre), got {k}")
    return k


def _neighbour_mask(kernel_size: int) -> torch.Tensor:
    """1 for every tap of the k^3 cube except the centre (a voxel sends no message to itself)."""
    mask = torch.ones(kernel_size, kernel_size, kernel_size)
    c = kernel_size // 2
    mask[c, c, c] = 0.0
    return mask


class MeanFieldMRF(nn.Module):
    """Trainable mean-field MRF layer: logits (N, C, D, H, W) in, refined logits of the same shape out.

    Per iteration: ``Q = softmax(U_t)``; ``m = depthwise_conv(Q)`` (one learned k^3 filter
    per class, centre tap masked out); ``U_{t+1} = U - compat(m)`` with ``compat`` a learned
    1x1x1 class-mixing conv.  Initialisation: the spatial filter averages the neighbours
    (weights ``1/(k^3-1)``) and ``compat = -init_weight * I``, which is the Potts model up to a
    per-voxel constant that softmax ignores.  The output then differs from the input by
    ``init_weight * m`` with ``m`` in [0, 1], so at initialisation the layer is close to the
    identity, yet both parameters receive gradients from the first step.
    ``iterations=0`` makes it the identity.
    """

    def __init__(self, n_classes: int, iterations: int = 5, kernel_size: int = 3, init_weight: float = 0.5) -> None:
        super().__init__()
        self.n_classes = _check_int("n_classes", n_classes, 2)
        self.iterations = _check_int("iterations", iterations, 0)
        self.kernel_size = _check_kernel(kernel_size)
        if not isinstance(init_weight, (int, float)) or isinstance(init_weight, bool) or not init_weight >= 0.0:
            raise ValueError(f"init_weight must be a non-negative number, got {init_weight!r}")
        k = self.kernel_size
        mask = _neighbour_mask(k)
        self.register_buffer("neighbour_mask", mask.view(1, 1, k, k, k), persistent=False)
        self.spatial_weight = nn.Parameter((mask / mask.sum()).expand(n_classes, 1, k, k, k).clone())
        self.compatibility = nn.Conv3d(n_classes, n_classes, kernel_size=1, bias=False)
        with torch.no_grad():
            self.compatibility.weight.copy_(-float(init_weight) * torch.eye(n_classes).view(n_classes, n_classes, 1, 1, 1))

    def message(self, q: torch.Tensor) -> torch.Tensor:
        """Per-class filtered neighbour probabilities (message passing step)."""
        p = self.kernel_size // 2
        weight = (self.spatial_weight * self.neighbour_mask).to(q.dtype)
        return F.conv3d(F.pad(q, [p] * 6, mode="replicate"), weight, groups=self.n_classes)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 5 or logits.shape[1] != self.n_classes:
            raise ValueError(
                f"MeanFieldMRF expects logits of shape (N, {self.n_classes}, D, H, W), got {tuple(logits.shape)}"
            )
        u = logits
        out = logits
        for _ in range(self.iterations):
            q = torch.softmax(out, dim=1)
            out = u - self.compatibility(self.message(q).to(u.dtype))
        return out


def _looks_like_probs(x: torch.Tensor) -> bool:
    if x.min() < 0 or x.max() > 1:
        return False
    return bool(torch.allclose(x.sum(dim=1), torch.ones((), dtype=x.dtype, device=x.device), atol=1e-3))


def mrf_smooth(
    logits_or_probs: torch.Tensor,
    iterations: int = 5,
    weight: float = 1.0,
    kernel_size: int = 3,
    probs: Optional[bool] = None,
) -> torch.Tensor:
    """Fixed Potts mean-field smoothing for post-processing; returns float32 logits of the input's shape.

    Energy: ``-unary + weight * (number of k^3-neighbours with another label)``, so mean field
    reads ``U_{t+1}(l) = U(l) + weight * sum_{j in N(i)} Q_j(l)``.  ``weight`` is therefore the
    logit penalty per disagreeing neighbour: a voxel whose 26 neighbours all disagree is pushed
    by up to 26*weight, enough to remove isolated flips, while voxels on a flat boundary
    (17 vs 9 neighbours) keep their label.  Large weights round off sharp corners.

    Input is (N, C, D, H, W) or (C, D, H, W).  ``probs=None`` treats the input as class
    probabilities when it is in [0, 1] and sums to 1 over the class axis, else as logits.
    """
    iterations = _check_int("iterations", iterations, 0)
    k = _check_kernel(kernel_size)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight >= 0.0:
        raise ValueError(f"weight must be a non-negative number, got {weight!r}")
    x = logits_or_probs
    if not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"mrf_smooth expects a tensor (N, C, D, H, W) or (C, D, H, W), got {shape}")
    unbatched = x.dim() == 4
    x = x.unsqueeze(0) if unbatched else x
    x = x.float()
    if x.shape[1] < 2:
        raise ValueError(f"mrf_smooth needs at least 2 class channels, got {x.shape[1]}")
    is_probs = _looks_like_probs(x) if probs is None else probs
    u = torch.log(x.clamp_min(1e-6)) if is_probs else x
    c = x.shape[1]
    kernel = (_neighbour_mask(k) * float(weight)).to(x.device).expand(c, 1, k, k, k)
    p = k // 2
    out = u
    for _ in range(iterations):
        q = torch.softmax(out, dim=1)
        out = u + F.conv3d(F.pad(q, [p] * 6, mode="replicate"), kernel, groups=c)
    return out.squeeze(0) if unbatched else out


class WithMRF(nn.Module):
    """Any logits-returning segmenter followed by a trainable ``MeanFieldMRF``."""

    def __init__(self, backbone: nn.Module, n_classes: int, iterations: int = 5, kernel_size: int = 3) -> None:
        super().__init__()
        self.backbone = backbone
        self.mrf = MeanFieldMRF(n_classes, iterations, kernel_size)

    @property
    def stride(self) -> int:
        """The backbone's input-size multiple (the MRF keeps any size)."""
        return int(getattr(self.backbone, "stride", 1))

    def forward(self, x: torch.Tensor) -> Logits:
        """Deep supervision's lower scales (a backbone's list output) pass unrefined."""
        out = self.backbone(x)
        if isinstance(out, torch.Tensor):
            return self.mrf(out)
        return [self.mrf(out[0]), *out[1:]]


def with_mrf(model: nn.Module, n_classes: int, iterations: int = 5) -> WithMRF:
    """Append a trainable mean-field MRF to ``model`` (used for ``MODEL.MRF: true``)."""
    return WithMRF(model, n_classes, iterations)
