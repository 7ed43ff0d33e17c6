"""Resampling to a target spacing: linear for images, nearest for labels, with the exact inverse grid."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rtseg.io.volume import Volume


def target_shape(shape: tuple[int, int, int], spacing: tuple[float, float, float], target: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def resize_array(array: np.ndarray | torch.Tensor, shape: tuple[int, int, int], is_label: bool) -> torch.Tensor:
    """Resize a 3D (or C,D,H,W) array to ``shape``; corner-aligned=False keeps voxel centres consistent both ways."""
    t = torch.as_tensor(array)
    squeeze = t.ndim == 3
    x = t[None, None] if squeeze else t[None]
    if tuple(x.shape[2:]) == tuple(shape):
        out = x
    elif is_label:
        out = F.interpolate(x.float(), size=shape, mode="nearest-exact").to(t.dtype)
    else:
        out = F.interpolate(x.float(), size=shape, mode="trilinear", align_corners=False)
    return out[0, 0] if squeeze else out[0]


def resampled_affine(affine: np.ndarray, in_shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> np.ndarray:
    """Affine of the resized grid covering the same physical extent (voxel-centre convention)."""
    scale = np.array([i / o for i, o in zip(in_shape, out_shape)])
    new = affine.copy()
    new[:3, :3] = affine[:3, :3] * scale[None, :]
    # voxel centre 0 of the new grid sits at (scale-1)/2 in old voxel units
    new[:3, 3] = affine[:3, 3] + affine[:3, :3] @ ((scale - 1.0) / 2.0)
    return new


def resample_volume(volume: Volume, spacing: tuple[float, float, float], is_label: bool) -> Volume:
    shape = target_shape(volume.shape, volume.spacing, spacing)
    if shape == volume.shape:
        return volume
    arr = resize_array(volume.array if is_label else volume.array.astype(np.float32), shape, is_label).numpy()
    return Volume(arr, resampled_affine(volume.affine, volume.shape, shape), dict(volume.meta))
