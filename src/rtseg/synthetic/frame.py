"""Where the phantom's anatomy lives: the patient frame (mm), its pose on the grid and smooth random fields.

Anatomy is defined in millimetres in a RAS+ patient frame (+x = patient's right,
+y = anterior, +z = superior; origin near the bladder neck) and sampled onto whatever grid is
asked for, so a different ``shape``/``spacing`` shows the same-sized anatomy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from rtseg.errors import ConfigError

Shape3 = tuple[int, int, int]
Spacing3 = tuple[float, float, float]

# Patient-frame point (mm) that sits at the centre of the field of view.
FOV_ANCHOR = np.array([0.0, -15.0, 12.0])
# Box (patient frame, mm) on which the smooth random fields live: independent of the grid.
FIELD_LO = np.array([-200.0, -200.0, -140.0])
FIELD_HI = np.array([200.0, 200.0, 160.0])
DISPLACEMENT_STEP_MM, TEXTURE_STEP_MM = 45.0, 12.0


@dataclass(frozen=True)
class Grid:
    """Patient-frame coordinates (mm) of every voxel centre."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray


@dataclass(frozen=True)
class Pose:
    """How the patient lies in the scanner: size factor, small rotation, couch shift (mm)."""

    scale: float
    rotation: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class Fields:
    """Coarse random node grids: a smooth displacement (mm) for the soft organs and two textures."""

    displacement: np.ndarray
    texture: np.ndarray


@dataclass(frozen=True)
class Frame:
    """The sampled frame of one patient: rigid grid, displaced grid for soft organs, textures."""

    rigid: Grid
    soft: Grid
    tex_soft: np.ndarray
    tex_fat: np.ndarray


def check_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[Shape3, Spacing3]:
    """A phantom grid must have >= 4 voxels and >= 40 mm per axis, so the anatomy fits."""
    if len(shape) != 3 or any(int(s) != s or int(s) < 4 for s in shape):
        raise ConfigError(f"phantom shape must be 3 integers >= 4, got {list(shape)}")
    if len(spacing) != 3 or any(not (math.isfinite(float(s)) and float(s) > 0) for s in spacing):
        raise ConfigError(f"phantom spacing must be 3 positive numbers (mm), got {list(spacing)}")
    if any(int(n) * float(s) < 40.0 for n, s in zip(shape, spacing)):
        raise ConfigError(f"phantom field of view shape*spacing must be >= 40 mm per axis, got shape {list(shape)} spacing {list(spacing)}")
    return (int(shape[0]), int(shape[1]), int(shape[2])), (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def as_rng(rng_or_seed: np.random.Generator | int) -> np.random.Generator:
    """A Generator as given, or ``default_rng(seed)`` for a non-negative integer seed."""
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (int, np.integer)) and not isinstance(rng_or_seed, bool) and rng_or_seed >= 0:
        return np.random.default_rng(int(rng_or_seed))
    raise ConfigError(f"phantom seed must be a non-negative integer or numpy Generator, got {rng_or_seed!r}")


def grid_affine(shape: Shape3, spacing: Spacing3) -> np.ndarray:
    """Axis-aligned RAS+ affine with world (0, 0, 0) at the centre of the field of view."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.asarray(spacing)
    return affine


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """Small patient rotation: yaw in the axial plane dominates, as on a CT couch."""
    ax, ay, az = np.deg2rad([rng.uniform(-4, 4), rng.uniform(-3, 3), rng.uniform(-6, 6)])
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_pose(rng: np.random.Generator) -> Pose:
    scale = rng.uniform(0.94, 1.06)
    rot = _rotation(rng)
    shift = np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-5, 5)])
    return Pose(scale, rot, shift)


def _smooth_field(rng: np.random.Generator, step_mm: float, n: int) -> np.ndarray:
    """``n`` random coarse grids (node spacing ``step_mm``) over the field box, for trilinear/cubic sampling."""
    nodes = np.ceil((FIELD_HI - FIELD_LO) / step_mm).astype(int) + 1
    return rng.standard_normal((n, *nodes))


def draw_fields(rng: np.random.Generator) -> Fields:
    disp = _smooth_field(rng, DISPLACEMENT_STEP_MM, 3) * rng.uniform(2.0, 3.5)
    tex = _smooth_field(rng, TEXTURE_STEP_MM, 2)
    return Fields(disp, tex)


def sample(field: np.ndarray, g: Grid, step_mm: float, order: int) -> np.ndarray:
    coords = np.stack([(c - lo) / step_mm for c, lo in zip((g.x, g.y, g.z), FIELD_LO)])
    return ndi.map_coordinates(field, coords, order=order, mode="nearest", prefilter=order > 1).astype(np.float32)


def build_frame(shape: Shape3, spacing: Spacing3, pose: Pose, fields: Fields) -> Frame:
    """Voxel centres in the patient frame: p_patient = R^T (p_world - shift) / scale + anchor."""
    sp = np.asarray(spacing)
    origin = -(np.asarray(shape) - 1) / 2.0 * sp
    wx = origin[0] + sp[0] * np.arange(shape[0]) - pose.shift[0]
    wy = origin[1] + sp[1] * np.arange(shape[1]) - pose.shift[1]
    wz = origin[2] + sp[2] * np.arange(shape[2]) - pose.shift[2]
    rt = pose.rotation.T / pose.scale
    comps = []
    for r in range(3):
        comps.append(
            (rt[r, 0] * wx[:, None, None] + rt[r, 1] * wy[None, :, None] + rt[r, 2] * wz[None, None, :] + FOV_ANCHOR[r]).astype(np.float32)
        )
    g = Grid(*comps)
    d = [sample(fields.displacement[i], g, DISPLACEMENT_STEP_MM, 3) for i in range(3)]
    gs = Grid(g.x + d[0], g.y + d[1], g.z + d[2])  # soft organs live in the displaced frame
    tex_soft = sample(fields.texture[0], g, TEXTURE_STEP_MM, 1)
    tex_fat = sample(fields.texture[1], g, TEXTURE_STEP_MM, 1)
    return Frame(g, gs, tex_soft, tex_fat)


def ellipsoid(g: Grid, c: Sequence[float], a: Sequence[float]) -> np.ndarray:
    """Normalised radius: < 1 inside the ellipsoid with centre ``c`` and semi-axes ``a``."""
    return ((g.x - c[0]) / a[0]) ** 2 + ((g.y - c[1]) / a[1]) ** 2 + ((g.z - c[2]) / a[2]) ** 2


def segment_distance(g: Grid, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Distance (mm) to the segment p0-p1: capsules model femoral necks and shafts."""
    d = p1 - p0
    t = ((g.x - p0[0]) * d[0] + (g.y - p0[1]) * d[1] + (g.z - p0[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((g.x - p0[0] - t * d[0]) ** 2 + (g.y - p0[1] - t * d[1]) ** 2 + (g.z - p0[2] - t * d[2]) ** 2)
