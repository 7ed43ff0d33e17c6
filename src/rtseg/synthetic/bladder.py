"""The bladder: an ellipsoid whose size follows its filling, muscular wall around urine."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtseg.synthetic.canvas import BLADDER, Canvas, Tissue
from rtseg.synthetic.frame import Grid, ellipsoid


@dataclass(frozen=True)
class Bladder:
    semi_axes: np.ndarray  # mm
    centre: np.ndarray  # mm
    wall: float  # mm

    @property
    def top_z(self) -> float:
        return self.centre[2] + self.semi_axes[2]


def draw_bladder(rng: np.random.Generator) -> Bladder:
    fill = rng.uniform(0.0, 1.0)
    bl_a = np.array([33 + 21 * fill, 27 + 15 * fill, 20 + 17 * fill]) * rng.uniform(0.92, 1.08, 3)
    bl_c = np.array([rng.uniform(-4, 4), 4 + 0.45 * bl_a[1], -3 + bl_a[2]])
    return Bladder(bl_a, bl_c, rng.uniform(1.5, 3.0))


def paint_bladder(canvas: Canvas, gs: Grid, bladder: Bladder, tissue: Tissue) -> None:
    """Wall + urine; the label includes the wall (outer-wall contour, as drawn clinically)."""
    in_bl = ellipsoid(gs, bladder.centre, bladder.semi_axes) < 1.0
    canvas.hu[in_bl] = tissue.muscle
    canvas.hu[ellipsoid(gs, bladder.centre, bladder.semi_axes - bladder.wall) < 1.0] = tissue.urine
    canvas.labels[in_bl] = BLADDER
