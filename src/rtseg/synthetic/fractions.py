"""SIMULATED treatment fractions of one phantom patient (``rtseg adapt`` tests and benchmarks).

A fraction is the same phantom patient (same seed: same anatomy, same smooth deformation field,
same textures) on another day: a new setup (couch shift up to +-6 mm, rotation up to 3 degrees), a
bladder filled to x0.5..x2 of its planning volume, a rectum with another content (gas, faeces or
empty) and diameter, a prostate pushed by both, a weight change of the body outline (+-4 %) and new
scanner noise. Labels are exact, as for every phantom. ``Volume.meta`` says ``simulated fraction``.

Fraction 0 is the planning scan itself (``generate_patient(seed)`` voxel for voxel).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Sequence

import numpy as np

from rtseg.io.volume import Volume
from rtseg.synthetic.canvas import Canvas
from rtseg.synthetic.frame import Pose, as_rng, build_frame, check_grid, grid_affine
from rtseg.synthetic.patient import DEFAULT_SHAPE, DEFAULT_SPACING, SOURCE, PatientDraws, draw_patient, paint_anatomy
from rtseg.synthetic.scanner import acquire, draw_noise

FRACTION_SOURCE = "rtseg.phantoms simulated fraction"


def _small_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    ax, ay, az = np.deg2rad(rng.uniform(-max_deg, max_deg, 3) * np.array([0.5, 0.5, 1.0]))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def fraction_draws(plan: PatientDraws, rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[PatientDraws, dict[str, float]]:
    """The planning draws changed as a treatment day changes them; the changes as numbers (for reports)."""
    shift = rng.uniform(-6.0, 6.0, 3)
    rot = _small_rotation(rng, 3.0)
    pose = Pose(plan.pose.scale, rot @ plan.pose.rotation, plan.pose.shift + shift)
    fill = float(np.exp(rng.uniform(math.log(0.5), math.log(2.0))))  # bladder volume factor
    bl = plan.bladder
    bl_a = bl.semi_axes * fill ** (1.0 / 3.0)
    bl_c = np.array([bl.centre[0], bl.centre[1] + 0.45 * (bl_a[1] - bl.semi_axes[1]), bl.centre[2] + bl_a[2] - bl.semi_axes[2]])
    bladder = replace(bl, semi_axes=bl_a, centre=bl_c)
    content = str(rng.choice(["empty", "gas", "faeces"], p=[0.3, 0.3, 0.4]))
    radius = float(rng.uniform(10, 13) if content == "empty" else rng.uniform(14, 20))
    bubbles = rng.uniform(0, 1, (int(rng.integers(3, 12)), 4))
    rectum = replace(plan.rectum, content=content, radius=radius, bubbles=bubbles)
    # the prostate moves with its neighbours: a fuller rectum pushes it forward, a fuller bladder down and back
    d_rect = radius - plan.rectum.radius
    d_bl = bl_a[2] - bl.semi_axes[2]
    move = np.array([0.0, 0.35 * d_rect - 0.15 * d_bl, -0.2 * d_bl]) + rng.normal(0.0, 1.0, 3)
    prostate = replace(plan.prostate, centre=plan.prostate.centre + move)
    weight = float(rng.uniform(0.96, 1.04))
    body = replace(plan.body, half_width=plan.body.half_width * weight, half_depth=plan.body.half_depth * weight,
                   fat_thickness=max(4.0, plan.body.fat_thickness + (weight - 1.0) * 120.0))
    noise = draw_noise(rng, shape)
    draws = replace(plan, pose=pose, bladder=bladder, rectum=rectum, prostate=prostate, body=body, noise=noise)
    facts = {"shift_mm": float(np.linalg.norm(shift)), "bladder_volume_factor": fill, "rectum_radius_mm": radius,
             "prostate_shift_mm": float(np.linalg.norm(move)), "weight_factor": weight}
    return draws, facts


def generate_fraction(seed: int, fraction: int, shape: Sequence[int] = DEFAULT_SHAPE,
                      spacing: Sequence[float] = DEFAULT_SPACING) -> tuple[Volume, Volume]:
    """SIMULATED fraction ``fraction`` (>= 1) of phantom patient ``seed``: CT (int16 HU) and exact labels.

    ``fraction=0`` is the planning scan. Each fraction's changes come from ``default_rng([seed, fraction])``."""
    shape3, spacing3 = check_grid(shape, spacing)
    plan = draw_patient(as_rng(seed), shape3)
    facts: dict[str, float] = {}
    draws = plan
    if fraction > 0:
        draws, facts = fraction_draws(plan, np.random.default_rng([int(seed), int(fraction)]), shape3)
    affine = grid_affine(shape3, spacing3)
    frame = build_frame(shape3, spacing3, draws.pose, draws.fields)
    canvas = Canvas.empty(shape3)
    paint_anatomy(canvas, frame, draws)
    ct = acquire(canvas.hu, frame, draws.scanner, draws.noise, spacing3)
    meta = {"source": SOURCE if fraction == 0 else FRACTION_SOURCE, "simulated": True, "fraction": int(fraction), **facts}
    return Volume(ct, affine, dict(meta)), Volume(canvas.labels, affine.copy(), dict(meta))
