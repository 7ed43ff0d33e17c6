"""Bones: the pelvic ring (ilium/ischium laterally, pubis anteriorly), the sacrum, femora and femoral heads."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rtseg.synthetic.canvas import FEMUR_L, FEMUR_R, Canvas, Tissue
from rtseg.synthetic.frame import Grid, segment_distance

RING_Y_CENTRE = -15.0
JOINT_SPACE_MM = 2.5


@dataclass(frozen=True)
class PelvicRing:
    radius_x: float  # mm, mid-line of the ring below the iliac flare
    radius_y: float
    half_thickness: float


@dataclass(frozen=True)
class RingGeometry:
    """The ring sampled on the grid: signed distance (mm) to its mid-line and the iliac flare."""

    rx: np.ndarray
    ry: np.ndarray
    ring_dist: np.ndarray
    flare: np.ndarray


@dataclass(frozen=True)
class Femora:
    head_radius: np.ndarray  # (2,) mm
    head_centre: np.ndarray  # (2, 3) mm: row 0 = left femoral head (-x in RAS+), row 1 = right (+x)


@dataclass(frozen=True)
class FemurPart:
    """Distances (mm) of one femur's pieces and its acetabular cup, for painting bone and the head label."""

    head_d: np.ndarray
    neck_d: np.ndarray
    shaft_d: np.ndarray
    cup: np.ndarray
    radius: float


def draw_ring(rng: np.random.Generator) -> PelvicRing:
    return PelvicRing(rng.uniform(64, 72), rng.uniform(68, 76), rng.uniform(5, 7))


def draw_femora(rng: np.random.Generator) -> Femora:
    fem_r = rng.uniform(21.0, 25.0, 2)
    fem_c = np.array([[s * rng.uniform(84, 96), rng.uniform(-16, -8), rng.uniform(6, 18)] for s in (-1.0, 1.0)])
    return Femora(fem_r, fem_c)


def ring_geometry(g: Grid, ring: PelvicRing) -> RingGeometry:
    flare = np.clip(g.z - 25.0, 0, None)
    rx = ring.radius_x + 0.9 * flare
    ry = ring.radius_y + 0.15 * flare
    rr = np.sqrt((g.x / rx) ** 2 + ((g.y - RING_Y_CENTRE) / ry) ** 2)
    ring_dist = (rr - 1.0) * np.minimum(rx, ry)  # approx. signed distance (mm) to the ring's mid-line
    return RingGeometry(rx, ry, ring_dist, flare)


def _ring_bone(g: Grid, geo: RingGeometry, ring: PelvicRing) -> tuple[np.ndarray, np.ndarray]:
    """Bone and cortex of the ring; the posterior arc is left to the sacrum."""
    theta = np.degrees(np.arctan2((g.y - RING_Y_CENTRE) / geo.ry, g.x / geo.rx))
    half = ring.half_thickness * np.where(geo.flare > 0, np.clip(1 - geo.flare / 120, 0.45, 1), 1.0)
    on_ring = np.abs(geo.ring_dist) < half
    lateral = (np.abs(theta) < 62) | (np.abs(theta) > 118)
    anterior = (theta >= 62) & (theta <= 118)
    posterior = (theta < -60) & (theta > -120)  # the sacrum, drawn below
    bone = on_ring & ~posterior & ((lateral & (g.z > -45)) | (anterior & (g.z > -42) & (g.z < 4)))
    return bone, bone & (np.abs(geo.ring_dist) > half - 3.0)


def _sacrum(g: Grid) -> tuple[np.ndarray, np.ndarray]:
    y_sac = -95.0 + 0.006 * (g.z - 35.0) ** 2
    sac_half_t = np.clip(4.0 + 0.07 * (g.z + 25), 4, 13)
    sac_half_w = np.clip(10 + 0.45 * (g.z + 25), 8, 62)
    sac_d = np.maximum(np.abs(g.y - y_sac) - sac_half_t, np.abs(g.x) - sac_half_w)
    sacrum = (sac_d < 0) & (g.z > -28)
    return sacrum, sacrum & (sac_d > -2.5)


def _femur_parts(g: Grid, femora: Femora) -> list[FemurPart]:
    parts = []
    for c, r, side in zip(femora.head_centre, femora.head_radius, (-1.0, 1.0)):  # side = sign of x, i.e. lateral direction
        neck_end = c + np.array([side * 38.0, -6.0, -34.0])
        shaft_end = neck_end + np.array([side * 6.0, 0.0, -120.0])
        head_d = np.sqrt((g.x - c[0]) ** 2 + (g.y - c[1]) ** 2 + (g.z - c[2]) ** 2)
        neck_d = segment_distance(g, c, neck_end) - 0.62 * r
        shaft_d = np.minimum(segment_distance(g, neck_end, shaft_end) - 15.0, np.sqrt(((g.x - neck_end[0]) ** 2 + (g.y - neck_end[1]) ** 2 + (g.z - neck_end[2] - 6) ** 2)) - 19.0)
        # acetabulum: a bony cup over the medial-superior half of the head, 2.5 mm joint space
        nrm = np.array([-side, 0.0, 0.7]) / math.hypot(1.0, 0.7)
        facing = ((g.x - c[0]) * nrm[0] + (g.z - c[2]) * nrm[2]) / np.maximum(head_d, 1e-3)
        cup = (head_d > r + JOINT_SPACE_MM) & (head_d < r + 10) & (facing > -0.15)
        parts.append(FemurPart(head_d, neck_d, shaft_d, cup, r))
    return parts


def paint_bones(canvas: Canvas, g: Grid, geo: RingGeometry, ring: PelvicRing, femora: Femora, tissue: Tissue) -> list[FemurPart]:
    """Marrow and cortex of ring, sacrum, femora and acetabula; the hip joint space stays soft tissue."""
    bone, ring_cortex = _ring_bone(g, geo, ring)
    sacrum, sac_cortex = _sacrum(g)
    parts = _femur_parts(g, femora)
    bone_all = bone | sacrum
    cortex_all = ring_cortex | sac_cortex
    for p in parts:
        femur = (p.neck_d < 0) | (p.shaft_d < 0)
        bone_all |= femur | p.cup
        cortex_all |= (femur & (np.minimum(p.neck_d, p.shaft_d) > -2.5)) | p.cup & ((p.head_d > p.radius + 7.5) | (p.head_d < p.radius + 5))
    for p in parts:  # joint space is soft tissue
        bone_all &= p.head_d > p.radius + JOINT_SPACE_MM
        cortex_all &= p.head_d > p.radius + JOINT_SPACE_MM
        canvas.hu[p.head_d <= p.radius + JOINT_SPACE_MM] = tissue.muscle
    canvas.hu[bone_all] = tissue.marrow
    canvas.hu[cortex_all] = tissue.cortex
    return parts


def paint_femoral_heads(canvas: Canvas, parts: list[FemurPart], tissue: Tissue) -> None:
    """Cortex + marrow spheres; the label is the spherical head (4 left, 5 right)."""
    for p, lab in zip(parts, (FEMUR_L, FEMUR_R)):
        head = p.head_d < p.radius
        canvas.hu[head] = tissue.marrow
        canvas.hu[head & (p.head_d > p.radius - 2.5)] = tissue.cortex
        canvas.labels[head] = lab
