"""The bowel: the rectum (labelled) along the sacral curve, and unlabelled loops above the bladder.

The rectum's ends continue into unlabelled sigmoid above and a collapsed anal canal below, as in
clinical contours; its content (empty, gas or faeces) and gas bubbles vary per patient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rtseg.synthetic.bladder import Bladder
from rtseg.synthetic.canvas import RECTUM, Canvas, Tissue
from rtseg.synthetic.frame import Grid, ellipsoid
from rtseg.synthetic.prostate import Prostate

_X_CTRL_Z = [-70.0, 0.0, 40.0, 80.0]  # mm, where the left-right wiggle is set


@dataclass(frozen=True)
class Rectum:
    content: str  # "empty", "gas" or "faeces"
    radius: float
    gap: float  # fat plane to the prostate (mm)
    wall: float
    z0: float  # labelled from z0 (anorectal junction) ...
    z1: float  # ... to z1 (rectosigmoid junction)
    x_wiggle: np.ndarray
    y_ctrl: np.ndarray
    bubbles: np.ndarray  # (n, 4) in [0, 1): angle, height, size, off-centre
    hu_faeces: float


def draw_rectum(rng: np.random.Generator, prostate: Prostate) -> Rectum:
    content = rng.choice(["empty", "gas", "faeces"], p=[0.3, 0.3, 0.4])
    re_r = rng.uniform(10, 13) if content == "empty" else rng.uniform(14, 20)
    re_gap = rng.uniform(1.5, 4.0)
    re_wall = rng.uniform(2.5, 4.0)
    re_z0 = prostate.apex_z - rng.uniform(6, 14)
    re_z1 = rng.uniform(55, 75)
    re_x_wiggle = rng.uniform(-6, 6, 3)
    re_y_ctrl = np.array([-10.0, -1.0, 0.0, -13.0, -29.0, -23.0]) + rng.uniform(-4, 4, 6) * np.array([1, 0.5, 0, 1, 1, 1])
    n_bubbles = int(rng.integers(3, 12))
    bubbles = rng.uniform(0, 1, (n_bubbles, 4))
    hu_faeces = rng.uniform(-120, 0)
    return Rectum(content, re_r, re_gap, re_wall, re_z0, re_z1, re_x_wiggle, re_y_ctrl, bubbles, hu_faeces)


def draw_bowel_loops(rng: np.random.Generator) -> np.ndarray:
    """2-4 small-bowel loops, (n, 5) in [0, 1): size, x, y, height, gas level."""
    n_loops = int(rng.integers(2, 5))
    return rng.uniform(0, 1, (n_loops, 5))


def paint_bowel_loops(canvas: Canvas, gs: Grid, loops: np.ndarray, bladder: Bladder, cavity: np.ndarray, tissue: Tissue) -> None:
    """Unlabelled distractors above the bladder: fluid, wall, a little gas (ileum: patient's right)."""
    hu = canvas.hu
    for lp in loops:
        lr = 11 + 7 * lp[0]
        lc = np.array([5 + 55 * lp[1], -5 + 40 * lp[2], max(bladder.top_z + lr + 6, 45.0) + 25 * lp[3]])
        e = ellipsoid(gs, lc, (lr, lr * 0.85, lr * 0.8))
        hu[(e < 1.0) & cavity] = tissue.muscle - 5
        hu[(e < (1 - 3.0 / lr) ** 2) & cavity] = 20.0
        hu[(e < 0.25) & (gs.y - lc[1] > lr * 0.1 * (1 + lp[4])) & cavity] = -850.0


def paint_rectum(
    canvas: Canvas, gs: Grid, rectum: Rectum, prostate: Prostate, floor_z: float, tex_soft: np.ndarray, tissue: Tissue
) -> None:
    """Tube behind the prostate; the label covers z0..z1 where no organ was painted before."""
    hu, re = canvas.hu, rectum
    pr_c, pr_a = prostate.centre, prostate.semi_axes
    z_ctrl = np.array([-70.0, -40.0, pr_c[2], 15.0, 45.0, 75.0])
    y_contact = pr_c[1] - pr_a[1] - re.gap - re.radius
    yc = np.interp(gs.z, z_ctrl, y_contact + re.y_ctrl)
    xc = np.interp(gs.z, _X_CTRL_Z, [0.0, *re.x_wiggle])
    dz1 = np.clip(gs.z - re.z1, 0, None)
    xc = xc - 0.9 * dz1  # sigmoid turns to the patient's left (-x) and forwards
    yc = yc + 0.8 * dz1
    taper = np.clip(0.55 + (gs.z - re.z0) / 40.0, 0.55, 1.0)
    r_tube = re.radius * taper
    tube_e = ((gs.x - xc) / (1.2 * r_tube)) ** 2 + ((gs.y - yc) / r_tube) ** 2
    tube = (tube_e < 1.0) & (gs.z > floor_z - 40)
    lumen_scale = 0.35 if re.content == "empty" else np.clip(1 - re.wall / r_tube, 0.3, 0.9)
    lumen = tube_e < lumen_scale**2
    hu[tube] = tissue.muscle - 3
    if re.content == "empty":
        hu[lumen & tube] = 15.0
    elif re.content == "gas":
        hu[lumen & tube] = -850.0
    else:
        hu[lumen & tube] = re.hu_faeces + 40.0 * tex_soft[lumen & tube]
    _paint_bubbles(canvas, gs, re, z_ctrl, y_contact, lumen & tube)
    in_re = tube & (gs.z >= re.z0) & (gs.z <= re.z1)
    canvas.labels[in_re & (canvas.labels == 0)] = RECTUM


def _paint_bubbles(canvas: Canvas, gs: Grid, re: Rectum, z_ctrl: np.ndarray, y_contact: float, lumen: np.ndarray) -> None:
    """Gas bubbles in the lumen, nearer the anterior wall (gas rises, the patient lies supine)."""
    ang = re.bubbles[:, 0] * 2 * math.pi
    for (b0, b1, b2, b3), a in zip(re.bubbles, ang):
        bz = re.z0 + (re.z1 - re.z0) * b1
        br = {"gas": 3.0 + 4.0 * b2, "faeces": 2.0 + 3.0 * b2, "empty": 1.5 + 2.0 * b2}[str(re.content)]
        bx = float(np.interp(bz, _X_CTRL_Z, [0.0, *re.x_wiggle])) + 0.4 * re.radius * math.cos(a) * b3
        by = float(np.interp(bz, z_ctrl, y_contact + re.y_ctrl)) + 0.4 * re.radius * abs(math.sin(a)) * b3
        canvas.hu[(ellipsoid(gs, (bx, by, bz), (br, br, br * 1.4)) < 1.0) & lumen] = -800.0
