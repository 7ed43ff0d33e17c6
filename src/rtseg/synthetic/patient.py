"""One synthetic pelvic CT patient: draw every random parameter, then paint the anatomy part by part.

Each patient draws its own size, shape, position, small rotation, bladder filling, rectal content,
tissue HU, noise level and blur from ``np.random.default_rng(seed)``; a smooth random
displacement field (in millimetres) makes the soft organs non-ellipsoidal. All draws happen before
anything grid-dependent, so the anatomy does not depend on the grid, and **the order of the draws in
:func:`draw_patient` is part of the contract**: the same seed gives the same patient, voxel for voxel
(tests/test_phantoms.py holds checksums).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from rtseg.io.volume import Volume
from rtseg.synthetic.bladder import Bladder, draw_bladder, paint_bladder
from rtseg.synthetic.body import Body, draw_body, paint_body, paint_cavity
from rtseg.synthetic.bones import Femora, PelvicRing, draw_femora, draw_ring, paint_bones, paint_femoral_heads, ring_geometry
from rtseg.synthetic.canvas import Canvas, Tissue, draw_tissue
from rtseg.synthetic.frame import Fields, Frame, Pose, as_rng, build_frame, check_grid, draw_fields, draw_pose, grid_affine
from rtseg.synthetic.prostate import Prostate, draw_calcifications, draw_prostate, paint_prostate
from rtseg.synthetic.rectum import Rectum, draw_bowel_loops, draw_rectum, paint_bowel_loops, paint_rectum
from rtseg.synthetic.scanner import Scanner, acquire, draw_noise, draw_scanner

DEFAULT_SHAPE: tuple[int, int, int] = (64, 64, 32)
DEFAULT_SPACING: tuple[float, float, float] = (4.0, 4.0, 5.0)
SOURCE = "rtseg.phantoms"  # Volume.meta["source"] of every phantom (kept: written into datasets)


@dataclass(frozen=True)
class PatientDraws:
    """Every random number of one patient, in the order they are drawn."""

    pose: Pose
    tissue: Tissue
    scanner: Scanner
    body: Body
    ring: PelvicRing
    bladder: Bladder
    prostate: Prostate
    rectum: Rectum
    femora: Femora
    bowel_loops: np.ndarray
    calcifications: np.ndarray
    fields: Fields
    noise: np.ndarray


def draw_patient(rng: np.random.Generator, shape: tuple[int, int, int]) -> PatientDraws:
    """All draws, in a fixed order (changing it changes every patient)."""
    pose = draw_pose(rng)
    tissue = draw_tissue(rng)
    scanner = draw_scanner(rng)
    body = draw_body(rng)
    ring = draw_ring(rng)
    bladder = draw_bladder(rng)
    prostate = draw_prostate(rng, bladder)
    rectum = draw_rectum(rng, prostate)
    femora = draw_femora(rng)
    loops = draw_bowel_loops(rng)
    calcs = draw_calcifications(rng)
    fields = draw_fields(rng)
    noise = draw_noise(rng, shape)
    return PatientDraws(pose, tissue, scanner, body, ring, bladder, prostate, rectum, femora, loops, calcs, fields, noise)


def paint_anatomy(canvas: Canvas, frame: Frame, p: PatientDraws) -> None:
    """Paint outside in; later parts overwrite earlier ones, so the order sets who owns a shared voxel."""
    g, gs = frame.rigid, frame.soft
    inner = paint_body(canvas, g, p.body, p.tissue)
    geo = ring_geometry(g, p.ring)
    floor_z = p.prostate.apex_z - 10.0
    cavity = paint_cavity(canvas, g, geo.ring_dist, p.ring.half_thickness, floor_z, inner, p.tissue)
    femurs = paint_bones(canvas, g, geo, p.ring, p.femora, p.tissue)
    paint_bowel_loops(canvas, gs, p.bowel_loops, p.bladder, cavity, p.tissue)
    paint_bladder(canvas, gs, p.bladder, p.tissue)
    paint_rectum(canvas, gs, p.rectum, p.prostate, floor_z, frame.tex_soft, p.tissue)
    paint_prostate(canvas, gs, p.prostate, p.calcifications, frame.tex_soft, p.tissue)
    paint_femoral_heads(canvas, femurs, p.tissue)


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
    shape, spacing = check_grid(shape, spacing)
    rng = as_rng(rng_or_seed)
    affine = grid_affine(shape, spacing)
    draws = draw_patient(rng, shape)
    frame = build_frame(shape, spacing, draws.pose, draws.fields)
    canvas = Canvas.empty(shape)
    paint_anatomy(canvas, frame, draws)
    ct = acquire(canvas.hu, frame, draws.scanner, draws.noise, spacing)
    meta = {"source": SOURCE}
    return Volume(ct, affine, dict(meta)), Volume(canvas.labels, affine.copy(), dict(meta))
