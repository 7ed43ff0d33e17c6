"""Ellipsoid organs at clinical resolution, for benchmarks that need big volumes fast.

Two generators: :func:`perturbed_segmentation` (ground truth and a perturbed "prediction", for
metric benchmarks) and :func:`ellipsoid_ct` (an int16 CT with distinct organ densities and its
labels, for prediction benchmarks). Both paint each organ on its bounding box only, so a
512 x 512 x 160 case takes about a second.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

# --------------------------------------------------------------- metrics: ground truth + prediction
METRICS_SPACING = (0.98, 0.98, 3.0)
# (centre offset from the volume centre in mm, semi-axes in mm), roughly a male pelvis.
METRICS_ORGANS = (
    ((0.0, 10.0, -10.0), (22.0, 18.0, 20.0)),  # prostate
    ((0.0, -10.0, 35.0), (45.0, 38.0, 32.0)),  # bladder
    ((0.0, 45.0, 0.0), (18.0, 16.0, 60.0)),  # rectum
    ((90.0, 0.0, 0.0), (25.0, 25.0, 25.0)),  # femoral head left
    ((-90.0, 0.0, 0.0), (25.0, 25.0, 25.0)),  # femoral head right
)


def paint_noisy_ellipsoid(
    labels: np.ndarray, label: int, centre_mm: np.ndarray, radii_mm: np.ndarray, noise: float, rng: np.random.Generator,
    spacing: tuple[float, float, float] = METRICS_SPACING,
) -> None:
    """Ellipsoid with smooth boundary noise, computed on its bounding box only."""
    sp = np.asarray(spacing)
    centre = centre_mm / sp
    half = np.ceil(radii_mm * 1.3 / sp).astype(int) + 2
    lo = np.maximum(np.floor(centre - half).astype(int), 0)
    hi = np.minimum(np.ceil(centre + half).astype(int), labels.shape)
    grids = np.meshgrid(*[(np.arange(lo[a], hi[a]) - centre[a]) * sp[a] / radii_mm[a] for a in range(3)], indexing="ij")
    f = sum(g**2 for g in grids)
    if noise:
        field = ndimage.gaussian_filter(rng.standard_normal(f.shape), sigma=4.0)
        f = f + noise * field / (np.abs(field).max() + 1e-12)
    box = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    box[f <= 1.0] = label


def perturbed_segmentation(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth): each organ shifted (+-3 mm), scaled (+-10 %) and given a noisy surface."""
    rng = np.random.default_rng(seed)
    middle = np.asarray(shape) * np.asarray(METRICS_SPACING) / 2.0
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for label, (offset, radii) in enumerate(METRICS_ORGANS, start=1):
        centre = middle + np.asarray(offset)
        paint_noisy_ellipsoid(gt, label, centre, np.asarray(radii), noise=0.0, rng=rng)
        shift = rng.uniform(-3.0, 3.0, 3)
        scale = rng.uniform(0.9, 1.1, 3)
        paint_noisy_ellipsoid(pred, label, centre + shift, np.asarray(radii) * scale, noise=0.3, rng=rng)
    return pred, gt


# --------------------------------------------------------------- prediction: a CT with organ densities
CT_SPACING = (0.98, 0.98, 2.5)
# label, centre offset from the volume centre (mm, RAS: +x is the patient's left), semi-axes (mm), HU.
# Organ densities are distinct (contrast-filled bladder, gas/stool in the rectum, and, synthetic licence,
# the two femoral heads differ) so that a density-based network can tell every organ apart.
CT_ORGANS = (
    (2, (0.0, 10.0, 30.0), (45.0, 38.0, 32.0), 160.0),  # bladder
    (1, (0.0, 15.0, -25.0), (22.0, 18.0, 20.0), 100.0),  # prostate
    (3, (0.0, -35.0, -10.0), (18.0, 16.0, 70.0), -400.0),  # rectum
    (4, (90.0, 5.0, -15.0), (25.0, 25.0, 25.0), 600.0),  # femoral head left
    (5, (-90.0, 5.0, -15.0), (25.0, 25.0, 25.0), 1000.0),  # femoral head right
)
BODY_SEMI_AXES_MM = (185.0, 135.0)  # 370 x 270 mm: the body's bounding box is ~40 % of a 502 mm field
FAT_HU, SOFT_HU, AIR_HU = -100.0, 40.0, -1000.0


def _ellipsoid_box(shape: tuple[int, ...], centre_vox: np.ndarray, radii_vox: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """Bounding box of an ellipsoid (voxel units) and its mask within the box."""
    lo = np.maximum(np.floor(centre_vox - radii_vox - 1).astype(int), 0)
    hi = np.minimum(np.ceil(centre_vox + radii_vox + 2).astype(int), shape)
    g = np.meshgrid(*[(np.arange(lo[a], hi[a]) - centre_vox[a]) / radii_vox[a] for a in range(3)], indexing="ij")
    return tuple(slice(a, b) for a, b in zip(lo, hi)), (g[0] ** 2 + g[1] ** 2 + g[2] ** 2) <= 1.0


def ellipsoid_ct(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int16 HU volume and its labels (RAS axes, spacing CT_SPACING): air, body with a fat rim, organs."""
    rng = np.random.default_rng(seed)
    sp = np.asarray(CT_SPACING)
    centre = (np.asarray(shape) - 1) / 2.0
    x = (np.arange(shape[0]) - centre[0]) * sp[0]
    y = (np.arange(shape[1]) - centre[1]) * sp[1]
    r2 = (x[:, None] / BODY_SEMI_AXES_MM[0]) ** 2 + (y[None, :] / BODY_SEMI_AXES_MM[1]) ** 2
    ct = np.full(shape, AIR_HU, np.int16)
    ct[r2 <= 1.0] = FAT_HU  # fat rim
    ct[r2 <= 0.8] = SOFT_HU
    lab = np.zeros(shape, np.uint8)
    for label, off, radii, hu in CT_ORGANS:
        sl, m = _ellipsoid_box(shape, centre + np.asarray(off) / sp, np.asarray(radii) / sp)
        ct[sl][m] = hu
        lab[sl][m] = label
    ct += rng.normal(0.0, 4.0, size=shape[:2])[:, :, None].astype(np.int16)  # cheap texture
    ct += rng.integers(-8, 9, size=shape, dtype=np.int16)
    return ct, lab
