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


def linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along one axis: (lower source index, upper source index, weight of the upper), as
    ``F.interpolate(mode="trilinear", align_corners=False)`` computes them (float32, source clamped at 0)."""
    scale = np.float64(np.float32(n_in) / np.float32(n_out))  # torch's float scale, its index arithmetic fused
    src = np.maximum(((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32), np.float32(0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def region_of_box(box: tuple[slice, slice, slice], in_shape: tuple[int, int, int],
                  out_shape: tuple[int, int, int]) -> tuple[tuple[slice, slice, slice], tuple[slice, slice, slice]]:
    """(the output region whose linear interpolation reads any voxel of ``box``, the source block it reads).

    Outside the region every output voxel interpolates only voxels outside ``box``."""
    region, source = [], []
    for b, n_in, n_out in zip(box, in_shape, out_shape):
        if n_in == n_out:  # the identity along this axis
            region.append(b)
            source.append(b)
            continue
        i0, i1, _ = linear_taps(n_in, n_out)
        touches = np.flatnonzero(((i0 >= b.start) & (i0 < b.stop)) | ((i1 >= b.start) & (i1 < b.stop)))
        o0, o1 = int(touches[0]), int(touches[-1]) + 1
        region.append(slice(o0, o1))
        source.append(slice(int(i0[o0:o1].min()), int(i1[o0:o1].max()) + 1))
    return tuple(region), tuple(source)  # type: ignore[return-value]


class BoxResampler:
    """Linear resampling of a grid of ``in_shape`` that holds values in ``box`` and one fill value elsewhere,
    computed only over the output region that ``box`` reaches (:func:`region_of_box`), class after class.

    Why: a CT's body box is ~40 % of the volume; outside the region the result is the fill (the interpolation
    of a constant), so resampling the whole grid wastes more than half the work. Separable along the axes, with
    torch's taps (:func:`linear_taps`); equals ``resize_array`` on the whole grid up to float rounding (the 8
    corners are summed in another order). The work arrays are allocated once and reused for every class.
    """

    def __init__(self, box: tuple[slice, slice, slice], in_shape: tuple[int, int, int],
                 out_shape: tuple[int, int, int], device: torch.device | str = "cpu") -> None:
        device = torch.device(device)
        self.region, self.source = region_of_box(box, in_shape, out_shape)
        size = [s.stop - s.start for s in self.source]
        self.block = torch.empty(size, dtype=torch.float32, device=device)
        self.inner = tuple(slice(b.start - s.start, b.stop - s.start) for b, s in zip(box, self.source))
        self.steps: list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for axis, (r, s, n_in, n_out) in enumerate(zip(self.region, self.source, in_shape, out_shape)):
            if n_in == n_out:
                continue  # source index = output index, weight 0: the identity
            i0, i1, w = (a[r] for a in linear_taps(n_in, n_out))
            view = [1, 1, 1]
            view[axis] = -1
            size[axis] = r.stop - r.start
            low, high = (torch.empty(size, dtype=torch.float32, device=device) for _ in range(2))
            self.steps.append((axis, torch.from_numpy(i0 - s.start).to(device), torch.from_numpy(i1 - s.start).to(device),
                               torch.from_numpy(w).to(device).view(view), low, high))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(r.stop - r.start for r in self.region)  # type: ignore[return-value]

    def __call__(self, values: torch.Tensor, fill: float, out: torch.Tensor) -> torch.Tensor:
        """Resample ``values`` (the box) with ``fill`` around it into ``out`` (the region's shape)."""
        self.block.fill_(fill)
        self.block[self.inner] = values
        x = self.block
        for axis, i0, i1, w, low, high in self.steps:
            torch.index_select(x, axis, i0, out=low)
            torch.index_select(x, axis, i1, out=high)
            x = high.sub_(low).mul_(w).add_(low)  # low + w * (high - low)
        return out.copy_(x)

