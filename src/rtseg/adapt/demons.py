"""The registration's last stage: SimpleITK's symmetric-forces demons on what the B-spline left.

elastix's B-spline (24 mm control points, mutual information on random samples) leaves about a third of a voxel
to a voxel of error on simulated fractions (docs/ADAPT.md "Where propagated loses"). Demons follows the
intensity differences voxel by voxel, with a Gaussian-smoothed field (a dense, diffusion-like regulariser), so
it corrects what the 24 mm grid cannot follow. It assumes that one tissue has the same HU in both scans, which
holds for a fan-beam CT against a fan-beam CT (the planning CT and a daily kVCT) and not for cone-beam CT.

SimpleITK runs the demons (``FastSymmetricForcesDemonsRegistrationFilter``); we resample to a grid of at most
``max_voxels`` (so a 512x512 series costs what a 128^3 one does), and compose its field with the B-spline's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from rtseg.io.volume import Volume

HU_RANGE = (-1000.0, 1500.0)  # metal and air beyond this are not anatomy to align


@dataclass(frozen=True)
class DemonsOptions:
    """Chosen on simulated fractions of OpenKBP training patients (docs/ADAPT.md)."""

    iterations: int = 50  # 100 gave the same Dice on every organ (docs/ADAPT.md) in twice the time
    field_sigma: float = 1.5  # Gaussian smoothing of the displacement field each iteration, mm (ITK's image spacing on)
    image_sigma_mm: float = 1.0  # both CTs smoothed first: noise is not anatomy
    min_spacing_mm: float = 2.0  # the demons grid is no finer than this
    max_voxels: int = 4_000_000


def _grid(shape: tuple[int, ...], spacing: np.ndarray, opts: DemonsOptions) -> tuple[tuple[int, ...], np.ndarray]:
    """The demons grid covering the same extent: spacing at least ``min_spacing_mm``, at most ``max_voxels``."""
    extent = np.array(shape) * spacing
    step = np.maximum(spacing, opts.min_spacing_mm)
    n = np.maximum(np.round(extent / step), 1)
    if n.prod() > opts.max_voxels:
        n = np.maximum(np.floor(n / (n.prod() / opts.max_voxels) ** (1.0 / 3.0)), 1)
    return tuple(int(v) for v in n), extent / n


def _image(arr: np.ndarray, spacing: np.ndarray, shape: tuple[int, ...], step: np.ndarray, sigma_mm: float):  # type: ignore[no-untyped-def]
    """A float32 SimpleITK image of ``arr`` (axes i, j, k = x, y, z), smoothed, on the demons grid."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.clip(arr, *HU_RANGE).astype(np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(s) / 2.0 for s in spacing])  # voxel centres at (i + 1/2) * spacing: both grids share the box
    if sigma_mm > 0:
        img = sitk.SmoothingRecursiveGaussian(img, float(sigma_mm))
    if tuple(shape) == tuple(arr.shape):
        return img
    return sitk.Resample(img, [int(v) for v in shape], sitk.Transform(), sitk.sitkLinear, [float(s) / 2.0 for s in step],
                         [float(s) for s in step], img.GetDirection(), float(HU_RANGE[0]), sitk.sitkFloat32)


def refine(fixed: Volume, moving: Volume, coords: np.ndarray, opts: DemonsOptions = DemonsOptions()) -> tuple[np.ndarray, float]:
    """``coords`` (planning-grid voxel coordinates of each fraction voxel, from the B-spline) refined by demons
    between the fraction and the planning CT warped by ``coords``; returns (refined coords, seconds)."""
    import SimpleITK as sitk

    t0 = time.perf_counter()
    spacing = np.linalg.norm(fixed.affine[:3, :3], axis=0)
    warped = ndi.map_coordinates(np.asarray(moving.array, np.float32), coords, order=1, mode="nearest")
    shape, step = _grid(fixed.shape, spacing, opts)
    f = _image(np.asarray(fixed.array, np.float32), spacing, shape, step, opts.image_sigma_mm)
    m = _image(warped, spacing, shape, step, opts.image_sigma_mm)
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(int(opts.iterations))
    demons.SetUseImageSpacing(True)  # the field's standard deviations in mm
    demons.SetStandardDeviations(float(opts.field_sigma))
    field = demons.Execute(f, m)  # mm along i, j, k on the demons grid: fraction x -> warped plan x + u(x)
    u = sitk.GetArrayFromImage(field).transpose(3, 2, 1, 0).astype(np.float32)
    # u at each fraction voxel (linear in the demons grid; voxel centres of both grids share the box), in voxels
    at = [(np.arange(n, dtype=np.float32) + 0.5) * s / t - 0.5 for n, s, t in zip(fixed.shape, spacing, step)]
    mesh = np.meshgrid(*at, indexing="ij", copy=False)
    moved = np.indices(fixed.shape, dtype=np.float32)
    for c in range(3):
        moved[c] += ndi.map_coordinates(u[c], mesh, order=1, mode="nearest") / np.float32(spacing[c])
    out = np.stack([ndi.map_coordinates(coords[c], moved, order=1, mode="nearest") for c in range(3)])
    return out.astype(np.float32), time.perf_counter() - t0

