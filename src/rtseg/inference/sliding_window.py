"""Sliding-window inference with Gaussian blending, accumulated in place on the device.

The window grid is MONAI's (``dense_patch_slices``: step ``int(roi * (1 - overlap))``,
last window flush with the end), so results can be checked against
``monai.inferers.sliding_window_inference``. What differs, for speed: the
importance map is built once per ROI, the window list is planned on the host
before the first window runs (no device-to-host sync between windows), logits
are blended in place (``addcmul_``, no per-window temporaries), and windows
that hold only voxels known to be background (``skip_mask``) are not run.
"""
from __future__ import annotations

import copy
import functools
import itertools
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.device import bf16_weights, inference_autocast, memory_format
from rtseg.inference.fused import fuse_blocks

BACKGROUND_LOGIT = 10.0
"""Logit given to class 0 (others 0) where no window ran: background wins any argmax."""

Window = tuple[slice, slice, slice]


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices covering ``size`` with windows of ``roi`` (the last one flush with the end)."""
    if size <= roi:
        return [0]
    step = max(1, int(roi * (1.0 - overlap)))
    starts = list(range(0, size - roi + 1, step))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


def plan_windows(shape: Sequence[int], roi: Sequence[int], overlap: float,
                 skip_mask: Optional[np.ndarray | torch.Tensor] = None) -> list[Window]:
    """Window slices over ``shape`` (each >= ``roi``), without those entirely inside ``skip_mask``."""
    grids = [window_starts(int(s), int(r), overlap) for s, r in zip(shape, roi)]
    wins: list[Window] = [
        tuple(slice(a, a + int(r)) for a, r in zip(st, roi))  # type: ignore[misc]
        for st in itertools.product(*grids)
    ]
    if skip_mask is None:
        return wins
    mask = skip_mask.cpu().numpy() if isinstance(skip_mask, torch.Tensor) else np.asarray(skip_mask)
    return [w for w in wins if not bool(mask[w].all())]


@functools.lru_cache(maxsize=8)
def gaussian_importance(roi: tuple[int, int, int], sigma_scale: float = 0.125) -> torch.Tensor:
    """Gaussian importance map (sigma = roi * sigma_scale), as MONAI's ``compute_importance_map``:
    peak ~1 at the centre, weights clamped below at 1e-3 so window corners still count."""
    g: torch.Tensor | None = None
    for r in roi:
        x = torch.arange(-(r - 1) / 2.0, (r - 1) / 2.0 + 1, dtype=torch.float)
        x = torch.exp(x**2 / (-2 * (r * sigma_scale) ** 2))
        g = x if g is None else g.unsqueeze(-1) * x
    assert g is not None
    return torch.clamp(g, min=max(float(g.min()), 1e-3))


def sliding_window_predict(
    predictor: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    roi: Sequence[int],
    n_classes: int,
    overlap: float = 0.5,
    batch_size: int = 2,
    mode: str = "gaussian",
    skip_mask: Optional[torch.Tensor | np.ndarray] = None,
    out_dtype: torch.dtype = torch.float32,
    progress: Optional[Callable[[int], None]] = None,
) -> torch.Tensor:
    """Blend window logits over ``image`` (1, C, D, H, W) -> logits (1, n_classes, D, H, W).

    ``skip_mask`` (D, H, W) bool marks voxels known to be background (e.g. air):
    a window containing none of the complement is not run; voxels no window
    covers get a background logit. The image is padded (replicate) if smaller than ``roi``.
    """
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, C, D, H, W), got {tuple(image.shape)}")
    if mode not in ("gaussian", "constant"):
        raise ValueError(f"blending mode must be 'gaussian' or 'constant', got {mode!r}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    spatial = tuple(int(s) for s in image.shape[2:])
    roi_t = tuple(int(r) for r in roi)
    pad = [max(0, r - s) for r, s in zip(roi_t, spatial)]
    if skip_mask is not None:
        skip_mask = skip_mask.cpu().numpy() if isinstance(skip_mask, torch.Tensor) else np.asarray(skip_mask, bool)
        if tuple(skip_mask.shape) != spatial:
            raise ValueError(f"skip_mask shape {tuple(skip_mask.shape)} differs from image shape {spatial}")
    if any(pad):
        image = F.pad(image, [0, pad[2], 0, pad[1], 0, pad[0]], mode="replicate")
        if skip_mask is not None:
            skip_mask = np.pad(skip_mask, [(0, p) for p in pad], constant_values=True)
    full = tuple(int(s) for s in image.shape[2:])
    device = image.device
    windows = plan_windows(full, roi_t, overlap, skip_mask)
    weight = gaussian_importance(roi_t) if mode == "gaussian" else torch.ones(roi_t)
    w = weight.to(device=device, dtype=out_dtype)
    out = torch.zeros((n_classes,) + full, dtype=out_dtype, device=device)
    norm = torch.zeros(full, dtype=out_dtype, device=device)
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        batch = torch.cat([image[(slice(None), slice(None)) + sl] for sl in chunk], dim=0)
        logits = predictor(batch)
        for j, sl in enumerate(chunk):
            out[(slice(None),) + sl].addcmul_(logits[j].to(out_dtype), w)
            norm[sl].add_(w)
        if progress is not None:
            progress(len(chunk))
    if len(windows) == count_windows(full, roi_t, overlap):
        out.div_(norm)
    else:
        covered = norm > 0
        out.div_(torch.where(covered, norm, torch.ones_like(norm)))
        if not bool(covered.all()):
            # never-run voxels (only background): background wins
            bg = torch.zeros(n_classes, dtype=out_dtype, device=device)
            bg[0] = BACKGROUND_LOGIT
            out[:, ~covered] = bg[:, None]
    if any(pad):
        out = out[:, : spatial[0], : spatial[1], : spatial[2]]
    return out[None]


def count_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    return int(np.prod([len(window_starts(max(int(s), int(r)), int(r), overlap)) for s, r in zip(shape, roi)]))


def inference_memory_format(device: torch.device, channels_last: bool) -> torch.memory_format:
    """``rtseg.device.memory_format``, except that inference on the CPU keeps channels-last when asked:
    oneDNN runs these 3D convolutions ~1.6x faster in NDHWC at inference (docs/PERFORMANCE.md); for
    training on the CPU it depends on the width, so there TRAINING.CHANNELS_LAST must say ``always``."""
    if device.type == "cpu" and channels_last:
        return torch.channels_last_3d
    return memory_format(device, channels_last)


def network_runner(net: Callable[[torch.Tensor], torch.Tensor], device: torch.device, dtype: torch.dtype,
                   fmt: torch.memory_format) -> Callable[[torch.Tensor], torch.Tensor]:
    """Windows -> float32 logits through ``net`` in memory format ``fmt`` at ``dtype``
    (``rtseg.device.resolve_precision``): bf16 on the CPU feeds bf16 windows to a net whose weights
    ``prepare_network`` cast; on the GPU fast path it runs under ``rtseg.device.inference_autocast``."""
    cast = bf16_weights(device, dtype)

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype=torch.bfloat16 if cast else x.dtype, memory_format=fmt)
        with inference_autocast(device, dtype):
            return net(x).float()

    return run


def prepare_network(net: nn.Module, device: torch.device, dtype: torch.dtype, fmt: torch.memory_format) -> nn.Module:
    """``net`` on ``device`` in memory format ``fmt``, eval mode, its weights cast to bf16 where
    ``rtseg.device.bf16_weights`` says so (the matching ``network_runner`` feeds it); fp32 on the CPU with
    its residual blocks fused (``rtseg.inference.fused``)."""
    if bf16_weights(device, dtype):  # a copy: the caller's model (a loaded checkpoint) stays fp32
        net = copy.deepcopy(net).to(torch.bfloat16)
    net = net.to(device).to(memory_format=fmt).eval()
    if device.type == "cpu" and dtype == torch.float32:  # fp32 windows 1.25x faster; bf16 ones gain nothing
        net, _ = fuse_blocks(net)
    return net
