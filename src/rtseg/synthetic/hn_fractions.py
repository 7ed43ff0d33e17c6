"""SIMULATED treatment fractions of a real head-and-neck CT (OpenKBP), for ``rtseg adapt`` benchmarks.

Real repeated scans are not available here, so a fraction is the planning CT warped by a known motion
(every part drawn from ``default_rng([seed, fraction])``) plus noise; the true contours are the planning
labels warped the same way (nearest neighbour). The motion is deliberately not a B-spline (the model the
registration uses): it is the sum, in millimetres, of

- a rigid setup error (shift up to +-5 mm, rotations up to +-2 degrees);
- articulated head motion: the head tilts and flexes (+-4 degrees about the left-right and antero-posterior
  axes) about a pivot in the lower neck; the weight of the rotation rises smoothly from 0 below the pivot
  (shoulders stay) to 1 a few centimetres above it;
- weight loss: the body outline moves inwards by 2-6 mm at the skin, fading towards the body's axis;
- smooth anatomical change: Gaussian-smoothed white noise (sigma 20 mm), up to ~3 mm;
- parotid shrinkage: each parotid contracts towards its centre so that its volume drops by 10-30 %.

``Volume.meta`` of the result says ``simulated fraction`` and holds the drawn numbers.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage as ndi

from rtseg.io.volume import Volume

SOURCE = "simulated fraction (rtseg.synthetic.hn_fractions) of a real planning CT"
BODY_HU = -400.0


def _rotation(angles_deg: Sequence[float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _world(vol: Volume) -> np.ndarray:
    idx = np.indices(vol.shape, dtype=np.float32).reshape(3, -1)
    return (vol.affine[:3, :3] @ idx + vol.affine[:3, 3:4]).astype(np.float32)


def _articulation(p: np.ndarray, labels: np.ndarray, rng: np.random.Generator, facts: dict[str, Any]) -> np.ndarray:
    """Displacement of the head rotating about a lower-neck pivot (the cord's lowest third, or the volume's)."""
    z = p[2]
    cord = np.flatnonzero(labels.ravel() == 2)
    pts = p[:, cord] if cord.size > 50 else p
    lo, hi = np.percentile(pts[2], [5, 95])
    pivot_z = lo + 0.3 * (hi - lo)
    pivot = np.array([np.median(pts[0]), np.median(pts[1]), pivot_z], np.float32)
    angles = [rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-1.5, 1.5)]
    rot = _rotation(angles).astype(np.float32)
    weight = 1.0 / (1.0 + np.exp(-(z - pivot_z - 15.0) / 8.0))
    rel = p - pivot[:, None]
    facts.update(head_rotation_deg=[round(a, 2) for a in angles], pivot_z_mm=round(float(pivot_z), 1))
    return (rot @ rel - rel) * weight[None]


def _weight_loss(p: np.ndarray, body: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator,
                 facts: dict[str, Any], spacing: np.ndarray) -> np.ndarray:
    """Inward motion of up to ``loss`` mm at the skin, fading with depth (distance to the skin, 40 mm)."""
    loss = rng.uniform(2.0, 6.0)
    depth = ndi.distance_transform_edt(body.reshape(shape), sampling=spacing).ravel().astype(np.float32)
    fade = np.exp(-depth / 40.0) * body
    b3 = body.reshape(shape).astype(np.float32)
    n = np.maximum(b3.sum(axis=(0, 1)), 1.0)  # the body's axial centroid per slice (axis 2 runs along the body)
    centre = np.zeros_like(p)
    for a in range(2):
        per_slice = (p[a].reshape(shape) * b3).sum(axis=(0, 1)) / n
        centre[a] = np.broadcast_to(per_slice[None, None, :], shape).ravel()
    radial = p[:2] - centre[:2]
    norm = np.linalg.norm(radial, axis=0) + 1e-3
    out = np.zeros_like(p)
    out[:2] = radial / norm * loss * fade  # backward map: the fraction's skin samples the plan further out
    facts["weight_loss_mm"] = round(loss, 2)
    return out


def _smooth_change(shape: tuple[int, ...], spacing: np.ndarray, rng: np.random.Generator, facts: dict[str, Any]) -> np.ndarray:
    amp = rng.uniform(1.5, 3.0)
    out = []
    for _ in range(3):
        f = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=20.0 / spacing, mode="reflect")
        out.append((f / (np.abs(f).max() + 1e-6) * amp).ravel())
    facts["smooth_change_mm"] = round(amp, 2)
    return np.stack(out)


def _parotid_shrink(p: np.ndarray, labels: np.ndarray, rng: np.random.Generator, facts: dict[str, Any]) -> np.ndarray:
    """Backward map: fraction points near a parotid sample the plan further from its centre (it shrank)."""
    out = np.zeros_like(p)
    lab = labels.ravel()
    for c in (3, 4):
        sel = np.flatnonzero(lab == c)
        if sel.size < 20:
            continue
        shrink = rng.uniform(0.10, 0.30)  # volume loss
        centre = p[:, sel].mean(axis=1, keepdims=True)
        radius = float(np.sqrt(((p[:, sel] - centre) ** 2).sum(axis=0).mean()))
        s = 1.0 / (1.0 - shrink) ** (1.0 / 3.0) - 1.0  # linear stretch of the backward map in the organ
        rel = p - centre
        w = np.exp(-(rel ** 2).sum(axis=0) / (2.0 * (1.6 * radius) ** 2))
        out += rel * (s * w)[None]
        facts[f"parotid_{c}_volume_loss"] = round(shrink, 3)
    return out


def _motion(ct: Volume, labels: Volume, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    facts: dict[str, Any] = {}
    shape = ct.shape
    spacing = np.linalg.norm(ct.affine[:3, :3], axis=0)
    p = _world(ct)
    lab = np.asarray(labels.array)
    body = (ndi.binary_fill_holes(np.asarray(ct.array) > BODY_HU)).ravel()
    setup_rot = _rotation(rng.uniform(-2, 2, 3)).astype(np.float32)
    setup_shift = rng.uniform(-5, 5, 3).astype(np.float32)
    centre = p[:, body].mean(axis=1, keepdims=True) if body.any() else p.mean(axis=1, keepdims=True)
    disp = _articulation(p, lab, rng, facts)
    disp += _weight_loss(p, body, shape, rng, facts, spacing)
    disp += _smooth_change(shape, spacing, rng, facts)
    disp += _parotid_shrink(p, lab, rng, facts)
    q = setup_rot @ (p + disp - centre) + centre + setup_shift[:, None]
    facts["setup_shift_mm"] = [round(float(v), 2) for v in setup_shift]
    inv = np.linalg.inv(ct.affine)
    return (inv[:3, :3] @ q + inv[:3, 3:4]).reshape((3, *shape)), facts


def simulate_hn_fraction(ct: Volume, labels: Volume, seed: int, fraction: int = 1) -> tuple[Volume, Volume]:
    """SIMULATED fraction ``fraction`` of a planning CT and its labels (OpenKBP class numbering: 2 spinal cord,
    3/4 parotids): (CT, true labels) on the planning grid."""
    out_ct, truth, _ = simulate_hn_fraction_and_motion(ct, labels, seed, fraction)
    return out_ct, truth


def simulate_hn_fraction_and_motion(ct: Volume, labels: Volume, seed: int,
                                    fraction: int = 1) -> tuple[Volume, Volume, np.ndarray]:
    """``simulate_hn_fraction`` and the SIMULATED motion it used: (3, *shape) float32 planning-grid voxel
    coordinates that each fraction voxel samples (the backward map, the form of ``adapt.register.Registration.coords``).
    Benchmarks compare a registration with it (error in mm, the Dice a perfect registration gets)."""
    rng = np.random.default_rng([int(seed), int(fraction)])
    vox, facts = _motion(ct, labels, rng)
    hu = ndi.map_coordinates(np.asarray(ct.array, np.float32), vox, order=1, mode="constant", cval=-1024.0)
    hu += rng.normal(0.0, rng.uniform(8.0, 20.0), ct.shape).astype(np.float32)  # noise: drawn after the motion
    truth = ndi.map_coordinates(np.asarray(labels.array), vox, order=0, mode="constant", cval=0).astype(np.uint8)
    meta = {"source": SOURCE, "simulated": True, "fraction": int(fraction), **facts}
    out_ct = Volume(np.clip(np.rint(hu), -1024, 3071).astype(np.int16), ct.affine.copy(), dict(meta))
    return out_ct, Volume(truth, ct.affine.copy(), dict(meta)), vox.astype(np.float32)
