"""The prostate: soft tissue under the bladder neck, indenting the bladder base, with a few calcifications."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rtseg.synthetic.bladder import Bladder
from rtseg.synthetic.canvas import PROSTATE, Canvas, Tissue
from rtseg.synthetic.frame import Grid, ellipsoid


@dataclass(frozen=True)
class Prostate:
    semi_axes: np.ndarray  # mm
    centre: np.ndarray  # mm

    @property
    def apex_z(self) -> float:
        return self.centre[2] - self.semi_axes[2]


def draw_prostate(rng: np.random.Generator, bladder: Bladder) -> Prostate:
    """A volume of ~32 ml, placed so its apex-to-base axis sits under the bladder neck."""
    bl_a, bl_c = bladder.semi_axes, bladder.centre
    pr_vol = float(np.clip(rng.lognormal(math.log(32.0), 0.25), 22.0, 50.0))  # ml
    pr_shape = np.array([1.0, 0.72, 0.86]) * rng.uniform(0.92, 1.08, 3)
    pr_a = pr_shape * (pr_vol * 1000 * 3 / (4 * math.pi) / float(np.prod(pr_shape))) ** (1 / 3)
    pr_xy = np.array([rng.uniform(-3, 3), rng.uniform(-1, 5)])
    # it indents the bladder base by a few mm
    rel = np.clip((pr_xy - bl_c[:2]) / bl_a[:2], -0.95, 0.95)
    bl_surface_z = bl_c[2] - bl_a[2] * math.sqrt(max(1.0 - float(rel @ rel), 0.05))
    pr_c = np.array([pr_xy[0], pr_xy[1], bl_surface_z + rng.uniform(3, 6) - pr_a[2]])
    return Prostate(pr_a, pr_c)


def draw_calcifications(rng: np.random.Generator) -> np.ndarray:
    """0-2 calcifications, positions relative to the prostate's semi-axes."""
    n_calc = int(rng.integers(0, 3))
    return rng.uniform(-0.6, 0.6, (n_calc, 3))


def paint_prostate(canvas: Canvas, gs: Grid, prostate: Prostate, calcs: np.ndarray, tex_soft: np.ndarray, tissue: Tissue) -> None:
    """Textured soft tissue abutting the bladder, the rectum behind a thin fat plane."""
    in_pr = ellipsoid(gs, prostate.centre, prostate.semi_axes) < 1.0
    canvas.hu[in_pr] = tissue.prostate + 4.0 * tex_soft[in_pr]
    for cc in calcs:
        canvas.hu[ellipsoid(gs, prostate.centre + cc * prostate.semi_axes, (2.0, 2.0, 2.0)) < 1.0] = 350.0
    canvas.labels[in_pr] = PROSTATE
