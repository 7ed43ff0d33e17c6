"""The demons stage of ``rtseg adapt`` registration (SimpleITK): it recovers a known smooth warp that the
starting transform missed, composes with that transform, and keeps its grid small for large scans."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from rtseg.adapt.demons import DemonsOptions, _grid, refine
from rtseg.io.volume import Volume
from rtseg.synthetic.fractions import generate_fraction

pytest.importorskip("SimpleITK")


def _warp(vol: Volume, coords: np.ndarray) -> Volume:
    out = ndi.map_coordinates(np.asarray(vol.array, np.float64), coords, order=1, mode="nearest")
    return Volume(out.astype(np.float32), vol.affine.copy())


def _smooth_shift(shape: tuple[int, ...], amplitude_vox: float) -> np.ndarray:
    """A smooth displacement (voxels) of up to ``amplitude_vox``: sinusoids over the volume."""
    i, j, k = np.indices(shape, dtype=np.float32)
    u = amplitude_vox * np.sin(2 * np.pi * j / shape[1]) * np.cos(np.pi * k / shape[2])
    v = 0.8 * amplitude_vox * np.sin(2 * np.pi * i / shape[0])
    return np.stack([u, v, 0.3 * u])


def _body_error_mm(coords: np.ndarray, truth: np.ndarray, body: np.ndarray, spacing: np.ndarray) -> float:
    return float(np.linalg.norm((coords - truth) * spacing[:, None, None, None], axis=0)[body].mean())


@pytest.fixture(scope="module")
def plan() -> Volume:
    return generate_fraction(4, 0)[0]


def test_demons_recovers_a_smooth_warp_the_start_missed(plan) -> None:
    spacing = np.linalg.norm(plan.affine[:3, :3], axis=0)
    grid = np.indices(plan.shape, dtype=np.float32)
    truth = grid + _smooth_shift(plan.shape, 1.2)  # fraction voxel -> planning voxel, up to ~5 mm
    fraction = _warp(plan, truth)
    body = np.asarray(fraction.array) > -500
    refined, seconds = refine(fraction, plan, grid.copy())
    before = _body_error_mm(grid, truth, body, spacing)
    after = _body_error_mm(refined, truth, body, spacing)
    assert before > 2.0 and after < 0.5 * before, (before, after)
    assert seconds > 0


def test_demons_composes_with_the_transform_it_starts_from(plan) -> None:
    """The truth is a smooth (non-rigid) start followed by a residual warp: refining the start recovers the truth,
    so the demons field is taken in the right direction and units and composed with what it started from."""
    spacing = np.linalg.norm(plan.affine[:3, :3], axis=0)
    grid = np.indices(plan.shape, dtype=np.float32)
    i, j, k = grid
    start = grid + np.stack([3.0 * np.cos(2 * np.pi * k / plan.shape[2]), 2.5 * np.sin(2 * np.pi * i / plan.shape[0]),
                             np.sin(2 * np.pi * j / plan.shape[1])])
    residual = grid + _smooth_shift(plan.shape, 1.0)
    truth = np.stack([ndi.map_coordinates(start[c], residual, order=1, mode="nearest") for c in range(3)])
    fraction = _warp(plan, truth)
    body = np.asarray(fraction.array) > -500
    refined, _ = refine(fraction, plan, start.copy())
    before = _body_error_mm(start, truth, body, spacing)
    assert before > 2.0 and _body_error_mm(refined, truth, body, spacing) < 0.25 * before


def test_a_large_scan_gets_a_coarser_demons_grid_of_the_same_extent() -> None:
    shape, spacing = (512, 512, 160), np.array([0.98, 0.98, 3.0])
    n, step = _grid(shape, spacing, DemonsOptions())
    assert np.prod(n) <= DemonsOptions().max_voxels
    assert np.allclose(np.array(n) * step, np.array(shape) * spacing)
    assert (step >= 2.0 - 1e-6).all()
    small, small_step = _grid((128, 128, 128), np.array([3.9, 3.9, 2.5]), DemonsOptions())
    assert small == (128, 128, 128) and np.allclose(small_step, [3.9, 3.9, 2.5])


def test_a_refinement_with_an_implausible_jacobian_is_dropped_for_the_b_splines_result(plan, monkeypatch) -> None:
    """A same-patient fraction must not be refused because the refinement folded or squeezed a region implausibly:
    the B-spline's result is kept."""
    import rtseg.adapt.register as reg

    grid = np.indices(plan.shape, dtype=np.float32)
    start_jac = reg.coords_jacobian(plan, plan, grid)
    assert start_jac["folding_fraction"] == 0.0
    folded = grid.copy()
    folded[0, 20:44] = folded[0, 20:44][::-1]  # a slab mirrored along i: the map reverses there
    squashed = grid.copy()  # no fold, but 24 voxels squeezed into under one: local volume x0.03
    squashed[0, 20:44] = 20.0 + 0.03 * (squashed[0, 20:44] - 20.0)
    smooth = grid + 0.3 * np.sin(grid / 7.0)
    for returned, used in ((folded, 0.0), (squashed, 0.0), (smooth, 1.0)):
        monkeypatch.setattr(reg, "refine", lambda *a, _r=returned: (_r.copy(), 0.1))
        coords, jac, extra = reg._refined(plan, plan, grid, start_jac, reg.DemonsOptions(), reg.QualityLimits())
        assert extra["demons_used"] == used
        if used:
            assert np.array_equal(coords, smooth) and jac["folding_fraction"] == 0.0
        else:
            assert np.array_equal(coords, grid) and jac == start_jac


def test_the_predictors_quality_limits_decide_whether_the_refinement_is_kept(plan, monkeypatch) -> None:
    """``register`` judges the refinement by the limits it is given (``AdaptOptions.limits`` through the predictor),
    not by the defaults: a squeeze to x0.03 is dropped under the default 0.05, kept where 0.01 is allowed."""
    import dataclasses

    import rtseg.adapt.methods as methods
    import rtseg.adapt.register as reg

    def squeezed(fixed, moving, coords, opts):  # noqa: ANN001, ANN202
        out = np.indices(coords.shape[1:], dtype=np.float32)  # 24 voxels into under one: local volume x0.03
        out[0, 20:44] = 20.0 + 0.03 * (out[0, 20:44] - 20.0)
        return out, 0.1

    monkeypatch.setattr(reg, "refine", squeezed)
    fraction = generate_fraction(4, 1)[0]
    strict = reg.register(fraction, plan, threads=2)["deformable"]
    lenient_limits = dataclasses.replace(reg.QualityLimits(), min_jacobian=0.01)
    lenient = reg.register(fraction, plan, threads=2, limits=lenient_limits)["deformable"]
    assert strict.extra["demons_used"] == 0.0 and strict.jacobian["min"] > 0.05
    assert lenient.extra["demons_used"] == 1.0 and lenient.jacobian["min"] < 0.05
    # and the predictor hands its own limits to register
    seen = {}
    monkeypatch.setattr(methods, "register", lambda *a, **k: seen.update(k) or {"rigid": strict, "deformable": strict})
    predictor = object.__new__(methods.AdaptPredictor)
    predictor.options = methods.AdaptOptions(limits=lenient_limits, check_registration=False)
    predictor.plan_ct, predictor.last = plan, {}
    predictor._register(fraction, deformable=True)
    assert seen["limits"] is lenient_limits
