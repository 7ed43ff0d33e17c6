"""The body: subcutaneous fat around muscle, flattened on the couch, and the fat-filled pelvic cavity."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtseg.synthetic.canvas import Canvas, Tissue
from rtseg.synthetic.frame import Grid

BODY_Y_CENTRE = -12.0


@dataclass(frozen=True)
class Body:
    half_width: float  # mm, left-right semi-axis at z = 0
    half_depth: float  # mm, anterior-posterior semi-axis
    fat_thickness: float  # mm, subcutaneous fat


def draw_body(rng: np.random.Generator) -> Body:
    return Body(rng.uniform(160, 185), rng.uniform(100, 116), rng.uniform(12, 32))


def paint_body(canvas: Canvas, g: Grid, body: Body, tissue: Tissue) -> np.ndarray:
    """Fat shell, muscle inside, the couch below; returns the muscle region (``inner``)."""
    hu = canvas.hu
    zrel = g.z / 100.0
    a_z = body.half_width * (1 + 0.04 * zrel)
    body_yc = BODY_Y_CENTRE
    body_b, fat_t = body.half_depth, body.fat_thickness
    ell = (g.x / a_z) ** 2 + ((g.y - body_yc) / body_b) ** 2
    back = g.y > body_yc - 0.93 * body_b
    outline = (ell < 1.0) & back
    t_local = fat_t * np.where(g.y > body_yc, 1.3, 0.8)
    inner = ((np.abs(g.x) / np.maximum(a_z - t_local, 1)) ** 2 + ((g.y - body_yc) / np.maximum(body_b - t_local, 1)) ** 2 < 1.0) & (
        g.y > body_yc - 0.93 * body_b + 0.6 * t_local
    )
    hu[outline] = tissue.fat
    hu[inner & outline] = tissue.muscle
    couch = (g.y < body_yc - 0.93 * body_b - 2) & (g.y > body_yc - 0.93 * body_b - 10)
    hu[couch & ~outline] = -200.0
    return inner


def paint_cavity(
    canvas: Canvas, g: Grid, ring_dist: np.ndarray, ring_half: float, floor_z: float, inner: np.ndarray, tissue: Tissue
) -> np.ndarray:
    """Fat inside the bony ring (lined by 8 mm of obturator muscle) above the pelvic floor; returns the cavity."""
    cavity = (ring_dist < -(ring_half + 8)) & (g.z > floor_z) & inner
    canvas.hu[cavity] = tissue.pelvic_fat
    return cavity
