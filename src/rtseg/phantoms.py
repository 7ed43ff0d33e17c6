"""Synthetic pelvic CT patients with exact labels, for the demo, tests and benchmarks.

Anatomy is defined in millimetres in a RAS+ patient frame (+x = patient's right,
+y = anterior, +z = superior; origin near the bladder neck) and sampled onto whatever grid is asked
for, so a different ``shape``/``spacing`` shows the same-sized anatomy. Each patient
draws its own size, shape, position, small rotation, bladder filling, rectal content,
tissue HU, noise level and blur from ``np.random.default_rng(seed)``; a smooth random
displacement field (also in millimetres) makes the soft organs non-ellipsoidal.

Labels follow ``PELVIS_CLASS_NAMES``: 0 background, 1 prostate, 2 bladder, 3 rectum,
4 left femoral head, 5 right femoral head. Contrasts are deliberately realistic where
it matters for learning: prostate (~40 HU) against urine (~10 HU) is low contrast,
the prostate-rectum interface is a thin fat plane, and the rectum's ends continue
into unlabelled bowel, as in clinical contours.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from rtseg.config.schema import PELVIS_CLASS_NAMES
from rtseg.errors import ConfigError, DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.nifti import write_nifti
from rtseg.io.seed_npy import to_seed_array, write_seed_case
from rtseg.io.volume import Volume

DEFAULT_SHAPE: tuple[int, int, int] = (64, 64, 32)
DEFAULT_SPACING: tuple[float, float, float] = (4.0, 4.0, 5.0)
DEFAULT_SPLIT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}
N_CLASSES = len(PELVIS_CLASS_NAMES)
PROSTATE, BLADDER, RECTUM, FEMUR_L, FEMUR_R = 1, 2, 3, 4, 5
MANIFEST_NAME = "phantoms.json"

# Patient-frame point (mm) that sits at the centre of the field of view.
_FOV_ANCHOR = np.array([0.0, -15.0, 12.0])
# Box (patient frame, mm) on which the smooth random fields live: independent of the grid.
_FIELD_LO = np.array([-200.0, -200.0, -140.0])
_FIELD_HI = np.array([200.0, 200.0, 160.0])


@dataclass(frozen=True)
class _Grid:
    """Patient-frame coordinates (mm) of every voxel centre."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray


def _check_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    if len(shape) != 3 or any(int(s) != s or int(s) < 4 for s in shape):
        raise ConfigError(f"phantom shape must be 3 integers >= 4, got {list(shape)}")
    if len(spacing) != 3 or any(not (math.isfinite(float(s)) and float(s) > 0) for s in spacing):
        raise ConfigError(f"phantom spacing must be 3 positive numbers (mm), got {list(spacing)}")
    if any(int(n) * float(s) < 40.0 for n, s in zip(shape, spacing)):
        raise ConfigError(f"phantom field of view shape*spacing must be >= 40 mm per axis, got shape {list(shape)} spacing {list(spacing)}")
    return (int(shape[0]), int(shape[1]), int(shape[2])), (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Small patient rotation: yaw in the axial plane dominates, as on a CT couch."""
    ax, ay, az = np.deg2rad([rng.uniform(-4, 4), rng.uniform(-3, 3), rng.uniform(-6, 6)])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, step_mm: float, n: int) -> np.ndarray:
    """``n`` random coarse grids (node spacing ``step_mm``) over the field box, for trilinear/cubic sampling."""
    nodes = np.ceil((_FIELD_HI - _FIELD_LO) / step_mm).astype(int) + 1
    return rng.standard_normal((n, *nodes))


def _sample(field: np.ndarray, g: _Grid, step_mm: float, order: int) -> np.ndarray:
    coords = np.stack([(c - lo) / step_mm for c, lo in zip((g.x, g.y, g.z), _FIELD_LO)])
    return ndi.map_coordinates(field, coords, order=order, mode="nearest", prefilter=order > 1).astype(np.float32)


def _ellipsoid(g: _Grid, c: Sequence[float], a: Sequence[float]) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipsoid with centre ``c`` and semi-axes ``a``."""
    return ((g.x - c[0]) / a[0]) ** 2 + ((g.y - c[1]) / a[1]) ** 2 + ((g.z - c[2]) / a[2]) ** 2


def _segment_distance(g: _Grid, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance (mm) to the segment p0-p1: capsules model femoral necks and shafts."""
    d = p1 - p0
    t = ((g.x - p0[0]) * d[0] + (g.y - p0[1]) * d[1] + (g.z - p0[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((g.x - p0[0] - t * d[0]) ** 2 + (g.y - p0[1] - t * d[1]) ** 2 + (g.z - p0[2] - t * d[2]) ** 2)


def _rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer)) and not isinstance(rng_or_seed, bool) and rng_or_seed >= 0:
        return np.random.default_rng(int(rng_or_seed))
    raise ConfigError(f"phantom seed must be a non-negative integer or numpy Generator, got {rng_or_seed!r}")


def generate_patient(
    rng_or_seed: np.random.Generator | int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> tuple[Volume, Volume]:
    """One synthetic pelvic CT (int16 HU) and its labels (uint8) on the same RAS+ grid.

    RAS+ as in NIfTI: array axis 0 runs from the patient's left to right (+x = right),
    axis 1 posterior -> anterior, axis 2 inferior -> superior; world (0, 0, 0) is the
    centre of the field of view. The left femoral head (label 4) is therefore at -x. The default grid is
    a 256 x 256 x 160 mm field cropped around the pelvis (body outline cut laterally).
    """
    shape, spacing = _check_grid(shape, spacing)
    rng = _rng(rng_or_seed)
    sp = np.asarray(spacing)
    origin = -(np.asarray(shape) - 1) / 2.0 * sp
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin

    # ---- per-patient draws (all before anything grid-dependent, so anatomy does not depend on the grid)
    scale = rng.uniform(0.94, 1.06)
    rot = _rotation(rng)
    shift = np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-5, 5)])
    hu_fat = rng.uniform(-110, -90)
    hu_pelvic_fat = hu_fat + rng.uniform(0, 15)
    hu_muscle = rng.uniform(38, 50)
    hu_urine = rng.uniform(5, 15)
    hu_prostate = rng.uniform(35, 45)
    hu_cortex = rng.uniform(850, 1150)
    hu_marrow = rng.uniform(200, 300)
    noise_sd = rng.uniform(10, 15)
    psf_mm = np.array([rng.uniform(1.0, 1.6)] * 2 + [rng.uniform(1.5, 2.5)])

    body_a = rng.uniform(160, 185)
    body_b = rng.uniform(100, 116)
    fat_t = rng.uniform(12, 32)
    ring_rx = rng.uniform(64, 72)
    ring_ry = rng.uniform(68, 76)
    ring_half = rng.uniform(5, 7)

    fill = rng.uniform(0.0, 1.0)
    bl_a = np.array([33 + 21 * fill, 27 + 15 * fill, 20 + 17 * fill]) * rng.uniform(0.92, 1.08, 3)
    bl_c = np.array([rng.uniform(-4, 4), 4 + 0.45 * bl_a[1], -3 + bl_a[2]])
    bl_wall = rng.uniform(1.5, 3.0)

    pr_vol = float(np.clip(rng.lognormal(math.log(32.0), 0.25), 22.0, 50.0))  # ml
    pr_shape = np.array([1.0, 0.72, 0.86]) * rng.uniform(0.92, 1.08, 3)
    pr_a = pr_shape * (pr_vol * 1000 * 3 / (4 * math.pi) / float(np.prod(pr_shape))) ** (1 / 3)
    pr_xy = np.array([rng.uniform(-3, 3), rng.uniform(-1, 5)])
    # prostate apex-to-base axis sits under the bladder neck and indents the bladder base by a few mm
    rel = np.clip((pr_xy - bl_c[:2]) / bl_a[:2], -0.95, 0.95)
    bl_surface_z = bl_c[2] - bl_a[2] * math.sqrt(max(1.0 - float(rel @ rel), 0.05))
    pr_c = np.array([pr_xy[0], pr_xy[1], bl_surface_z + rng.uniform(3, 6) - pr_a[2]])

    content = rng.choice(["empty", "gas", "faeces"], p=[0.3, 0.3, 0.4])
    re_r = rng.uniform(10, 13) if content == "empty" else rng.uniform(14, 20)
    re_gap = rng.uniform(1.5, 4.0)
    re_wall = rng.uniform(2.5, 4.0)
    re_z0 = pr_c[2] - pr_a[2] - rng.uniform(6, 14)
    re_z1 = rng.uniform(55, 75)
    re_x_wiggle = rng.uniform(-6, 6, 3)
    re_y_ctrl = np.array([-10.0, -1.0, 0.0, -13.0, -29.0, -23.0]) + rng.uniform(-4, 4, 6) * np.array([1, 0.5, 0, 1, 1, 1])
    n_bubbles = int(rng.integers(3, 12))
    bubbles = rng.uniform(0, 1, (n_bubbles, 4))
    hu_faeces = rng.uniform(-120, 0)

    fem_r = rng.uniform(21.0, 25.0, 2)
    fem_c = np.array(
        [[s * rng.uniform(84, 96), rng.uniform(-16, -8), rng.uniform(6, 18)] for s in (-1.0, 1.0)]
    )  # row 0 = left femoral head (-x in RAS+), row 1 = right (+x)
    n_loops = int(rng.integers(2, 5))
    loops = rng.uniform(0, 1, (n_loops, 5))
    n_calc = int(rng.integers(0, 3))
    calcs = rng.uniform(-0.6, 0.6, (n_calc, 3))

    disp_step, tex_step = 45.0, 12.0
    disp = _smooth_field(rng, disp_step, 3) * rng.uniform(2.0, 3.5)
    tex = _smooth_field(rng, tex_step, 2)
    noise = rng.standard_normal(shape).astype(np.float32)

    # ---- voxel centres in the patient frame: p_patient = R^T (p_world - shift) / scale + anchor
    wx = origin[0] + sp[0] * np.arange(shape[0]) - shift[0]
    wy = origin[1] + sp[1] * np.arange(shape[1]) - shift[1]
    wz = origin[2] + sp[2] * np.arange(shape[2]) - shift[2]
    rt = rot.T / scale
    comps = []
    for r in range(3):
        comps.append(
            (rt[r, 0] * wx[:, None, None] + rt[r, 1] * wy[None, :, None] + rt[r, 2] * wz[None, None, :] + _FOV_ANCHOR[r]).astype(np.float32)
        )
    g = _Grid(*comps)
    d = [_sample(disp[i], g, disp_step, 3) for i in range(3)]
    gs = _Grid(g.x + d[0], g.y + d[1], g.z + d[2])  # soft organs live in the displaced frame
    tex_soft = _sample(tex[0], g, tex_step, 1)
    tex_fat = _sample(tex[1], g, tex_step, 1)

    labels = np.zeros(shape, np.uint8)
    hu = np.full(shape, -1000.0, np.float32)

    # ---- body: subcutaneous fat shell around muscle, flattened back on the couch
    zrel = g.z / 100.0
    a_z = body_a * (1 + 0.04 * zrel)
    body_yc = -12.0
    ell = (g.x / a_z) ** 2 + ((g.y - body_yc) / body_b) ** 2
    back = g.y > body_yc - 0.93 * body_b
    body = (ell < 1.0) & back
    t_local = fat_t * np.where(g.y > body_yc, 1.3, 0.8)
    inner = ((np.abs(g.x) / np.maximum(a_z - t_local, 1)) ** 2 + ((g.y - body_yc) / np.maximum(body_b - t_local, 1)) ** 2 < 1.0) & (
        g.y > body_yc - 0.93 * body_b + 0.6 * t_local
    )
    hu[body] = hu_fat
    hu[inner & body] = hu_muscle
    couch = (g.y < body_yc - 0.93 * body_b - 2) & (g.y > body_yc - 0.93 * body_b - 10)
    hu[couch & ~body] = -200.0

    # ---- pelvic cavity: fat inside the bony ring (lined by 8 mm of obturator muscle), floor at the bottom
    ring_yc = -15.0
    flare = np.clip(g.z - 25.0, 0, None)
    rx = ring_rx + 0.9 * flare
    ry = ring_ry + 0.15 * flare
    rr = np.sqrt((g.x / rx) ** 2 + ((g.y - ring_yc) / ry) ** 2)
    ring_dist = (rr - 1.0) * np.minimum(rx, ry)  # approx. signed distance (mm) to the ring's mid-line
    floor_z = pr_c[2] - pr_a[2] - 10.0
    cavity = (ring_dist < -(ring_half + 8)) & (g.z > floor_z) & inner
    hu[cavity] = hu_pelvic_fat

    # ---- bones: ring (ilium/ischium laterally, pubis anteriorly at low levels), sacrum, femora
    theta = np.degrees(np.arctan2((g.y - ring_yc) / ry, g.x / rx))
    half = ring_half * np.where(flare > 0, np.clip(1 - flare / 120, 0.45, 1), 1.0)
    on_ring = np.abs(ring_dist) < half
    lateral = (np.abs(theta) < 62) | (np.abs(theta) > 118)
    anterior = (theta >= 62) & (theta <= 118)
    posterior = (theta < -60) & (theta > -120)  # the sacrum, drawn below
    bone = on_ring & ~posterior & ((lateral & (g.z > -45)) | (anterior & (g.z > -42) & (g.z < 4)))
    ring_cortex = bone & (np.abs(ring_dist) > half - 3.0)

    y_sac = -95.0 + 0.006 * (g.z - 35.0) ** 2
    sac_half_t = np.clip(4.0 + 0.07 * (g.z + 25), 4, 13)
    sac_half_w = np.clip(10 + 0.45 * (g.z + 25), 8, 62)
    sac_d = np.maximum(np.abs(g.y - y_sac) - sac_half_t, np.abs(g.x) - sac_half_w)
    sacrum = (sac_d < 0) & (g.z > -28)
    sac_cortex = sacrum & (sac_d > -2.5)

    fem_parts = []
    for c, r, side in zip(fem_c, fem_r, (-1.0, 1.0)):  # side = sign of x, i.e. lateral direction
        neck_end = c + np.array([side * 38.0, -6.0, -34.0])
        shaft_end = neck_end + np.array([side * 6.0, 0.0, -120.0])
        head_d = np.sqrt((g.x - c[0]) ** 2 + (g.y - c[1]) ** 2 + (g.z - c[2]) ** 2)
        neck_d = _segment_distance(g, c, neck_end) - 0.62 * r
        shaft_d = np.minimum(_segment_distance(g, neck_end, shaft_end) - 15.0, np.sqrt(((g.x - neck_end[0]) ** 2 + (g.y - neck_end[1]) ** 2 + (g.z - neck_end[2] - 6) ** 2)) - 19.0)
        # acetabulum: a bony cup over the medial-superior half of the head, 2.5 mm joint space
        nrm = np.array([-side, 0.0, 0.7]) / math.hypot(1.0, 0.7)
        facing = ((g.x - c[0]) * nrm[0] + (g.z - c[2]) * nrm[2]) / np.maximum(head_d, 1e-3)
        cup = (head_d > r + 2.5) & (head_d < r + 10) & (facing > -0.15)
        fem_parts.append((head_d, neck_d, shaft_d, cup, r))

    bone_all = bone | sacrum
    cortex_all = ring_cortex | sac_cortex
    for head_d, neck_d, shaft_d, cup, r in fem_parts:
        femur = (neck_d < 0) | (shaft_d < 0)
        bone_all |= femur | cup
        cortex_all |= (femur & (np.minimum(neck_d, shaft_d) > -2.5)) | cup & ((head_d > r + 7.5) | (head_d < r + 5))
    for head_d, _, _, _, r in fem_parts:  # joint space is soft tissue
        bone_all &= head_d > r + 2.5
        cortex_all &= head_d > r + 2.5
        hu[head_d <= r + 2.5] = hu_muscle
    hu[bone_all] = hu_marrow
    hu[cortex_all] = hu_cortex

    # ---- bowel loops above the bladder (unlabelled distractors: fluid, wall, a little gas)
    bl_top = bl_c[2] + bl_a[2]
    for lp in loops:
        lr = 11 + 7 * lp[0]
        lc = np.array([5 + 55 * lp[1], -5 + 40 * lp[2], max(bl_top + lr + 6, 45.0) + 25 * lp[3]])  # ileum: patient's right
        e = _ellipsoid(gs, lc, (lr, lr * 0.85, lr * 0.8))
        hu[(e < 1.0) & cavity] = hu_muscle - 5
        hu[(e < (1 - 3.0 / lr) ** 2) & cavity] = 20.0
        hu[(e < 0.25) & (gs.y - lc[1] > lr * 0.1 * (1 + lp[4])) & cavity] = -850.0

    # ---- bladder: wall + urine; label includes the wall (outer-wall contour, as drawn clinically)
    e_bl = _ellipsoid(gs, bl_c, bl_a)
    in_bl = e_bl < 1.0
    hu[in_bl] = hu_muscle
    hu[_ellipsoid(gs, bl_c, bl_a - bl_wall) < 1.0] = hu_urine
    labels[in_bl] = BLADDER

    # ---- rectum: tube behind the prostate along the sacral curve, continuing into unlabelled
    # sigmoid above z1 and a collapsed anal canal below z0
    z_ctrl = np.array([-70.0, -40.0, pr_c[2], 15.0, 45.0, 75.0])
    y_contact = pr_c[1] - pr_a[1] - re_gap - re_r
    yc = np.interp(gs.z, z_ctrl, y_contact + re_y_ctrl)
    xc = np.interp(gs.z, [-70.0, 0.0, 40.0, 80.0], [0.0, *re_x_wiggle])
    dz1 = np.clip(gs.z - re_z1, 0, None)
    xc = xc - 0.9 * dz1  # sigmoid turns to the patient's left (-x) and forwards
    yc = yc + 0.8 * dz1
    taper = np.clip(0.55 + (gs.z - re_z0) / 40.0, 0.55, 1.0)
    r_tube = re_r * taper
    tube_e = ((gs.x - xc) / (1.2 * r_tube)) ** 2 + ((gs.y - yc) / r_tube) ** 2
    tube = (tube_e < 1.0) & (gs.z > floor_z - 40)
    lumen_scale = 0.35 if content == "empty" else np.clip(1 - re_wall / r_tube, 0.3, 0.9)
    lumen = tube_e < lumen_scale**2
    hu[tube] = hu_muscle - 3
    if content == "empty":
        hu[lumen & tube] = 15.0
    elif content == "gas":
        hu[lumen & tube] = -850.0
    else:
        hu[lumen & tube] = hu_faeces + 40.0 * tex_soft[lumen & tube]
    ang = bubbles[:, 0] * 2 * math.pi
    for (b0, b1, b2, b3), a in zip(bubbles, ang):
        bz = re_z0 + (re_z1 - re_z0) * b1
        br = {"gas": 3.0 + 4.0 * b2, "faeces": 2.0 + 3.0 * b2, "empty": 1.5 + 2.0 * b2}[str(content)]
        bx = float(np.interp(bz, [-70.0, 0.0, 40.0, 80.0], [0.0, *re_x_wiggle])) + 0.4 * re_r * math.cos(a) * b3
        by = float(np.interp(bz, z_ctrl, y_contact + re_y_ctrl)) + 0.4 * re_r * abs(math.sin(a)) * b3  # gas rises anteriorly
        hu[(_ellipsoid(gs, (bx, by, bz), (br, br, br * 1.4)) < 1.0) & lumen & tube] = -800.0
    in_re = tube & (gs.z >= re_z0) & (gs.z <= re_z1)
    labels[in_re & (labels == 0)] = RECTUM

    # ---- prostate: soft tissue abutting (indenting) the bladder base, rectum behind a thin fat plane
    in_pr = _ellipsoid(gs, pr_c, pr_a) < 1.0
    hu[in_pr] = hu_prostate + 4.0 * tex_soft[in_pr]
    for cc in calcs:
        hu[_ellipsoid(gs, pr_c + cc * pr_a, (2.0, 2.0, 2.0)) < 1.0] = 350.0
    labels[in_pr] = PROSTATE

    # ---- femoral heads: cortex + marrow spheres (label = the spherical head)
    for (head_d, _, _, _, r), lab in zip(fem_parts, (FEMUR_L, FEMUR_R)):
        head = head_d < r
        hu[head] = hu_marrow
        hu[head & (head_d > r - 2.5)] = hu_cortex
        labels[head] = lab

    # ---- texture, scanner blur and correlated noise
    soft = (hu > -200) & (hu < 150)
    hu[soft] += 5.0 * tex_soft[soft]
    fat = (hu > -200) & (hu <= -50)
    hu[fat] += 8.0 * tex_fat[fat]
    hu = ndi.gaussian_filter(hu, sigma=np.maximum(psf_mm / sp, 0.45), mode="nearest")
    noise = ndi.gaussian_filter(noise, sigma=(0.6, 0.6, 0.3), mode="wrap")
    noise *= noise_sd / max(float(noise.std()), 1e-6)
    hu += noise
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    meta = {"source": "rtseg.phantoms"}
    return Volume(ct, affine, dict(meta)), Volume(labels, affine.copy(), dict(meta))


# ---------------------------------------------------------------------------- datasets


def split_counts(n_cases: int, fractions: Mapping[str, float] | None = None) -> dict[str, int]:
    """Cases per split by largest remainder; every split with a positive fraction gets one if possible."""
    fr = dict(DEFAULT_SPLIT_FRACTIONS if fractions is None else fractions)
    if n_cases < 1:
        raise ConfigError(f"number of phantom cases must be >= 1, got {n_cases}")
    if not fr or any(not math.isfinite(v) or v < 0 for v in fr.values()) or sum(fr.values()) <= 0:
        raise ConfigError(f"split fractions must be non-negative with a positive sum, got {fr}")
    total = sum(fr.values())
    raw = {k: n_cases * v / total for k, v in fr.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n_cases - sum(counts.values())]:
        counts[k] += 1
    for k in fr:  # borrow from the largest split so a requested split is never empty
        if fr[k] > 0 and counts[k] == 0:
            donor = max(counts, key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    return counts


def seed_arrays(ct: Volume, labels: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Arrays in the seed's (D, H, W) order, as ``rtseg.io.seed_npy`` reads them back.

    D = axial slices (inferior -> superior), H = rows (anterior -> posterior), W = columns
    (patient's right -> left), i.e. the seed's radiological PNG slices stacked; for our
    axis-aligned RAS grid that is ``array[::-1, ::-1, :].transpose(2, 1, 0)``.
    """
    return to_seed_array(ct), to_seed_array(labels)


def write_phantom_dataset(
    out_dir: str | os.PathLike[str],
    n_cases: int | None = None,
    layout: Literal["nifti", "seed"] = "nifti",
    seed: int = 0,
    splits: Mapping[str, int] | None = None,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    split_fractions: Mapping[str, float] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, list[str]]:
    """Write a phantom dataset; returns case ids per split.

    Case ``i`` (counted over all splits in order) is drawn from ``default_rng(seed + i)``.
    ``nifti``: ``<out>/<split>/<id>_ct.nii.gz`` + ``<id>_labels.nii.gz``.
    ``seed``: ``<out>/<split>/CT/<id>.npy``, ``SEG/<id>.npy``, ``SEG_onehot/<id>.npy`` with
    arrays in the seed's (D, H, W) display order, see :func:`seed_arrays`;
    that layout has no geometry, so the voxel spacing is kept in ``phantoms.json``.
    A non-empty split folder is refused unless ``overwrite`` (stale cases would mix in).
    """
    shape, spacing = _check_grid(shape, spacing)
    if layout not in ("nifti", "seed"):
        raise ConfigError(f"phantom layout must be 'nifti' or 'seed', got {layout!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if splits is not None:
        if split_fractions is not None:
            raise ConfigError("give either split counts or split fractions, not both")
        counts = {str(k): int(v) for k, v in splits.items()}
        if not counts or any(v < 0 for v in counts.values()) or sum(counts.values()) == 0:
            raise ConfigError(f"split counts must be non-negative with at least one case, got {counts}")
        if n_cases is not None and sum(counts.values()) != n_cases:
            raise ConfigError(f"split counts {counts} add up to {sum(counts.values())}, but {n_cases} cases were asked for")
    else:
        if n_cases is None:
            raise ConfigError("number of phantom cases is required when no split counts are given")
        counts = split_counts(int(n_cases), split_fractions)
    for name in counts:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ConfigError(f"split name must be a plain folder name, got {name!r}")

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    for name, n in counts.items():
        d = out / name
        if n and d.is_dir() and any(d.iterdir()):
            if not overwrite:
                raise DataError(f"{d}: folder is not empty; choose another output folder or overwrite it (--overwrite)")
            shutil.rmtree(d)

    from tqdm import tqdm

    ids: dict[str, list[str]] = {}
    total = sum(counts.values())
    bar = tqdm(total=total, desc="phantoms", unit="case", disable=not progress)
    index = 0
    try:
        for name, n in counts.items():
            ids[name] = []
            for _ in range(n):
                case_id = f"phantom_{index:03d}"
                ct, lab = generate_patient(seed + index, shape, spacing)
                if layout == "nifti":
                    write_nifti(ct, out / name / f"{case_id}_ct.nii.gz", dtype=np.int16)
                    write_nifti(lab, out / name / f"{case_id}_labels.nii.gz", dtype=np.uint8)
                else:
                    ct_a, lab_a = seed_arrays(ct, lab)
                    write_seed_case(out / name, case_id, ct_a, lab_a, n_classes=N_CLASSES)
                ids[name].append(case_id)
                index += 1
                bar.update(1)
    finally:
        bar.close()
    manifest = {
        "generator": "rtseg.phantoms",
        "layout": layout,
        "seed": int(seed),
        "shape": list(shape),
        "spacing": list(spacing),
        "seed_layout_axes": "(D, H, W) = (inferior->superior, anterior->posterior, right->left)" if layout == "seed" else None,
        "seed_layout_spacing_dhw": list(spacing[::-1]) if layout == "seed" else None,
        "class_names": list(PELVIS_CLASS_NAMES),
        "splits": ids,
    }
    with atomic_path(out / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return ids
