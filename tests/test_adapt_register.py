"""``rtseg adapt`` registration (itk-elastix): a known rigid transform and a known smooth warp are recovered,
a fraction of another patient is flagged, the simulated phantom fractions are what they say."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from rtseg.adapt.register import Registration, quality_problems, refusal_reasons, register, warp_probabilities
from rtseg.io.volume import Volume
from rtseg.synthetic.fractions import generate_fraction
from rtseg.synthetic.patient import generate_patient

pytest.importorskip("itk")

SEED = 3


@pytest.fixture(scope="module")
def plan() -> tuple[Volume, Volume]:
    return generate_fraction(SEED, 0)


def _resample(vol: Volume, world_map, order: int, cval: float) -> np.ndarray:
    """``vol`` sampled at world_map(p) for every voxel centre p of its own grid (an independent scipy warp)."""
    idx = np.indices(vol.shape, dtype=np.float64).reshape(3, -1)
    world = vol.affine[:3, :3] @ idx + vol.affine[:3, 3:4]
    src = world_map(world)
    inv = np.linalg.inv(vol.affine)
    vox = inv[:3, :3] @ src + inv[:3, 3:4]
    out = ndi.map_coordinates(np.asarray(vol.array, np.float64), vox, order=order, mode="constant", cval=cval)
    return out.reshape(vol.shape)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def test_fraction_zero_is_the_planning_phantom_and_fractions_say_simulated() -> None:
    ct0, lab0 = generate_fraction(SEED, 0)
    ct, lab = generate_patient(SEED)
    assert np.array_equal(ct0.array, ct.array) and np.array_equal(lab0.array, lab.array)
    ct1, lab1 = generate_fraction(SEED, 1)
    assert ct1.meta["simulated"] is True and "simulated fraction" in ct1.meta["source"]
    assert 0.5 <= ct1.meta["bladder_volume_factor"] <= 2.0
    bladder_ratio = np.count_nonzero(lab1.array == 2) / np.count_nonzero(lab0.array == 2)
    assert 0.4 < bladder_ratio < 2.3  # the bladder filled or emptied (clipped by the field of view)
    assert not np.array_equal(lab1.array, lab0.array)
    again = generate_fraction(SEED, 1)
    assert np.array_equal(again[0].array, ct1.array)  # reproducible


def test_registration_recovers_a_known_rigid_transform_within_1mm(plan) -> None:
    ct0, _ = plan
    angle = np.deg2rad(3.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    shift = np.array([4.0, -3.0, 2.5])
    known = lambda p: rot @ p + shift[:, None]  # noqa: E731  fraction point -> planning point
    fixed = Volume(_resample(ct0, known, 1, -1024.0).astype(np.float32), ct0.affine.copy())
    reg = register(fixed, ct0, deformable=False)["rigid"]
    body = np.argwhere(np.asarray(fixed.array) > -500)[::50].T.astype(np.float64)
    world = fixed.affine[:3, :3] @ body + fixed.affine[:3, 3:4]
    found = reg.rigid_matrix[:3, :3] @ world + reg.rigid_matrix[:3, 3:4]
    err = np.linalg.norm(found - known(world), axis=0)
    assert err.max() < 1.0, f"max error {err.max():.2f} mm, mean {err.mean():.2f} mm"
    assert reg.similarity > 0.95


@pytest.mark.slow
def test_registration_recovers_a_known_smooth_warp_dice_095(plan, tmp_path, monkeypatch) -> None:
    ct0, lab0 = plan
    ext = np.array(ct0.shape) * np.linalg.norm(ct0.affine[:3, :3], axis=0)

    def known(p: np.ndarray) -> np.ndarray:  # a smooth warp of up to 5 mm (no folding)
        u = 5.0 * np.sin(2 * np.pi * p[1] / ext[1]) * np.cos(np.pi * p[2] / ext[2])
        v = 4.0 * np.sin(2 * np.pi * p[0] / ext[0])
        return p + np.stack([u, v, 0.6 * u])

    fixed = Volume(_resample(ct0, known, 1, -1024.0).astype(np.float32), ct0.affine.copy())
    # the true contours: the planning masks warped by the known field, interpolated as adapt interpolates them
    # (linearly, then the most likely class), so the comparison measures the registration, not the interpolation
    onehot = [Volume((lab0.array == c).astype(np.float32), lab0.affine) for c in range(6)]
    truth = np.argmax([_resample(m, known, 1, float(c == 0)) for c, m in enumerate(onehot)], axis=0)
    monkeypatch.chdir(tmp_path)  # elastix/transformix write nothing where they run
    regs = register(fixed, ct0, deformable=True)
    warped = warp_probabilities(regs["deformable"], lab0.array, 6).argmax(axis=0)
    rigid = warp_probabilities(regs["rigid"], lab0.array, 6).argmax(axis=0)
    assert list(tmp_path.iterdir()) == []
    for c, name in ((1, "prostate"), (2, "bladder"), (3, "rectum"), (4, "femur_l"), (5, "femur_r")):
        assert _dice(warped == c, truth == c) >= 0.95, name
    assert np.mean([_dice(rigid == c, truth == c) for c in range(1, 6)]) < 0.95  # the warp is not rigid
    assert quality_problems(regs) == [] and refusal_reasons(regs) == []


@pytest.mark.slow
def test_a_fraction_of_another_patient_is_flagged(plan) -> None:
    ct0, _ = plan
    other, _ = generate_fraction(SEED + 6, 1)
    regs = register(other, ct0, deformable=True)
    problems = quality_problems(regs)
    assert problems, {k: r.summary() for k, r in regs.items()}
    own, _ = generate_fraction(SEED, 1)
    assert quality_problems(register(own, ct0, deformable=True)) == []


@pytest.mark.slow
def test_a_fraction_the_centre_of_gravity_start_loses_is_registered_from_the_geometric_centres() -> None:
    """Phantom 2002's first fraction: elastix started from the images' centres of gravity keeps 973 of 4000 samples
    inside the planning CT and stops; from the geometric centres it finds the setup and the plan follows."""
    plan_ct, plan_lab = generate_fraction(2002, 0)
    frac, frac_lab = generate_fraction(2002, 1)
    regs = register(frac, plan_ct, deformable=True)
    assert regs["rigid"].extra["fallback_start"] == 1.0 and regs["deformable"].extra["fallback_start"] == 1.0
    assert refusal_reasons(regs) == []
    warped = warp_probabilities(regs["deformable"], plan_lab.array, 6).argmax(axis=0)
    for c, name in ((1, "prostate"), (4, "femur_l"), (5, "femur_r")):
        assert _dice(warped == c, frac_lab.array == c) >= 0.85, name


@pytest.mark.slow
def test_a_fraction_whose_bspline_runs_away_follows_rigid_and_demons_flagged() -> None:
    """Phantom 1005's first fraction: the B-spline stage runs away from both starts (similarity below 0, a sixth
    of the body folded); the rigid result refined by demons alone is plausible, delivered with a QA flag."""
    plan_ct, plan_lab = generate_fraction(1005, 0)
    frac, frac_lab = generate_fraction(1005, 1)
    regs = register(frac, plan_ct, deformable=True)
    assert regs["deformable"].extra["bspline_dropped"] == 1.0 and refusal_reasons(regs) == []
    assert any("B-spline registration was implausible" in p for p in quality_problems(regs))
    warped = warp_probabilities(regs["deformable"], plan_lab.array, 6).argmax(axis=0)
    rigid = warp_probabilities(regs["rigid"], plan_lab.array, 6).argmax(axis=0)
    for c, name in ((1, "prostate"), (2, "bladder")):  # demons follows what the setup alone does not
        assert _dice(warped == c, frac_lab.array == c) >= 0.85 > _dice(rigid == c, frac_lab.array == c), name


def test_when_elastix_fails_from_both_starts_the_error_is_its_own_reason_in_one_line(plan, monkeypatch) -> None:
    from rtseg.adapt import register as module
    from rtseg.errors import DataError

    shipped = module._parameter_object

    def impossible(names, iterations=None):  # type: ignore[no-untyped-def]  # more valid samples than there are
        pobj = shipped(names, iterations)
        pobj.SetParameter(0, "RequiredRatioOfValidSamples", "1.5")
        return pobj

    monkeypatch.setattr(module, "_parameter_object", impossible)
    with pytest.raises(DataError, match=r"failed: Too many samples map outside moving image buffer: \d+ / \d+$") as err:
        register(plan[0], plan[0], deformable=False, iterations=2)
    assert "\n" not in str(err.value)


def _reg(kind: str, similarity: float, jac_min: float = 1.0, folding: float = 0.0) -> Registration:
    return Registration(kind, np.zeros((3, 2, 2, 2), np.float32), similarity,
                        {"min": jac_min, "max": 1.5, "folding_fraction": folding}, 0.0)


def test_implausible_registrations_are_refused_doubtful_ones_flagged() -> None:
    good = {"rigid": _reg("rigid", 0.85), "deformable": _reg("deformable", 0.95, 0.4)}
    assert refusal_reasons(good) == [] and quality_problems(good) == []
    doubtful = {"rigid": _reg("rigid", 0.62), "deformable": _reg("deformable", 0.90, 0.3)}
    assert refusal_reasons(doubtful) == [] and "same patient" in quality_problems(doubtful)[0]
    folding = {"rigid": _reg("rigid", 0.85), "deformable": _reg("deformable", 0.95, -0.2, folding=0.002)}
    assert "folds 0.20 %" in refusal_reasons(folding)[0]
    unrelated = {"rigid": _reg("rigid", 0.31), "deformable": _reg("deformable", 0.55, 0.3)}
    assert len(refusal_reasons(unrelated)) == 2


def test_fused_probabilities_sum_to_one_where_the_methods_give_a_voxel_to_different_organs() -> None:
    from rtseg.adapt.methods import fuse

    finetuned = np.zeros((3, 4, 4, 4), np.float32)
    propagated = np.zeros_like(finetuned)
    finetuned[1], finetuned[0] = 1.0, 0.0          # the patient model: organ 1 everywhere
    propagated[2], propagated[0] = 1.0, 0.0        # the plan: organ 2 everywhere (the methods disagree)
    out = fuse(finetuned, propagated, {1, 2}, weight=0.5)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.5)
    np.testing.assert_allclose(out[2], 0.5)
    # the plan contours organ 2 only: organ 2 is the average (0.5); organ 1, which only the patient model sees,
    # shares what is left (0.5) with background in the patient model's proportions (1 : 0)
    partial = fuse(finetuned, propagated, {2}, weight=0.5)
    np.testing.assert_allclose(partial.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(partial[1], 0.5, rtol=1e-6)
    np.testing.assert_allclose(partial[2], 0.5, rtol=1e-6)
    # the patient model gives everything to the plan's organ: what the plan's organ leaves is background
    sure = np.zeros_like(finetuned)
    sure[2] = 1.0
    everything = fuse(sure, 0.6 * propagated + 0.2, {2}, weight=0.5)  # organ 2: 0.5 x 0.8 + 0.5 x 1
    np.testing.assert_allclose(everything[2], 0.9, rtol=1e-6)
    np.testing.assert_allclose(everything[0], 0.1, rtol=1e-5)
    np.testing.assert_allclose(everything[1], 0.0)
    agree = fuse(finetuned, finetuned, {1, 2}, weight=0.5)      # agreement: the organ keeps all of its probability
    np.testing.assert_allclose(agree[1], 1.0)
    np.testing.assert_allclose(agree[0], 0.0)


def test_fusion_weights_the_propagated_contours_and_the_patient_model_by_hand() -> None:
    """One organ, four voxels along a line: deep inside the propagated organ, on its surface (0.5), outside it,
    far away where only the patient model sees the organ. Hand-computed with weight w = 0.7."""
    from rtseg.adapt.methods import PROPAGATED_WEIGHT, fuse
    from rtseg.errors import ConfigError

    prop = np.array([1.0, 0.5, 0.2, 0.0], np.float32)
    net = np.array([0.9, 0.8, 0.3, 0.6], np.float32)
    stack = lambda p: np.stack([1.0 - p, p]).reshape(2, 4, 1, 1)  # noqa: E731  (background, organ)
    out = fuse(stack(net), stack(prop), {1}, weight=0.7)
    expected = 0.7 * prop + 0.3 * net  # 0.97, 0.59, 0.23, 0.18
    np.testing.assert_allclose(out[1].ravel(), expected, rtol=1e-6)
    np.testing.assert_allclose(out[0].ravel(), 1.0 - expected, rtol=1e-6)
    labels = out.argmax(axis=0).ravel()
    assert labels.tolist() == [1, 1, 0, 0]  # the network's 0.6 far away cannot win against the plan (0.18 < 0.5)
    # an organ the plan does not contour: the patient model alone, whatever the weight
    alone = fuse(stack(net), stack(prop), set(), weight=0.7)
    np.testing.assert_allclose(alone[1].ravel(), net, rtol=1e-6)
    assert PROPAGATED_WEIGHT == 1.0  # nothing known of the networks: the plan's organs as propagated
    with pytest.raises(ConfigError, match="fusion weight"):
        fuse(stack(net), stack(prop), {1}, weight=1.5)


def test_an_organ_the_plan_does_not_contour_only_shares_what_the_plans_organs_leave() -> None:
    """Three classes (background, organ 1 in the plan, organ 2 not in the plan); three voxels: inside the propagated
    organ 1, on its surface, outside it. The patient model is sure of organ 2 inside organ 1 (the physician drew
    organ 1 there: organ 2 may not take the voxel). Hand-computed with w = 0.85."""
    from rtseg.adapt.methods import fuse

    prop = np.array([[0.0, 0.5, 1.0], [1.0, 0.5, 0.0], [0.0, 0.0, 0.0]], np.float32).reshape(3, 3, 1, 1)
    net = np.array([[0.05, 0.3, 0.4], [0.05, 0.1, 0.0], [0.9, 0.6, 0.6]], np.float32).reshape(3, 3, 1, 1)
    out = fuse(net, prop, {1}, weight=0.85)
    organ1 = 0.85 * prop[1] + 0.15 * net[1]                  # 0.8575, 0.44, 0
    left = 1.0 - organ1                                       # 0.1425, 0.56, 1
    np.testing.assert_allclose(out[1], organ1, rtol=1e-5)
    np.testing.assert_allclose(out[2], left * net[2] / (net[0] + net[2]), rtol=1e-5)  # 0.1350, 0.3733, 0.6
    np.testing.assert_allclose(out[0], left * net[0] / (net[0] + net[2]), rtol=1e-5)  # 0.0075, 0.1867, 0.4
    assert out.argmax(axis=0).ravel().tolist() == [1, 1, 2]



def test_fused_labels_give_the_plans_organs_what_propagation_gives_them_at_weight_one() -> None:
    """Random probabilities, organs 1 and 3 in the plan, 2 and 4 not: with w = 1 the fused labels of organs 1 and 3
    are exactly the propagated contours' (a plain argmax would grow them where the patient model sees organ 2 or 4
    and so splits the leftover); organs 2 and 4 only fill voxels propagation leaves to background."""
    from rtseg.adapt.methods import fuse, fused_labels

    rng = np.random.default_rng(3)
    net = rng.dirichlet(np.ones(5), size=(6, 6, 6)).transpose(3, 0, 1, 2).astype(np.float32)
    plan = rng.dirichlet(np.ones(3), size=(6, 6, 6)).transpose(3, 0, 1, 2).astype(np.float32)
    prop = np.zeros_like(net)
    prop[0], prop[1], prop[3] = plan[0], plan[1], plan[2]      # what warp_probabilities gives: 2 and 4 stay 0
    propagated = np.argmax(prop, axis=0)
    labels = fused_labels(fuse(net, prop, {1, 3}, weight=1.0), {1, 3})
    for c in (1, 3):
        assert np.array_equal(labels == c, propagated == c)
    assert set(np.unique(labels[propagated == 0])) <= {0, 2, 4}
    rest = np.argmax(net[[0, 2, 4]], axis=0)
    assert np.array_equal(labels[propagated == 0], np.array([0, 2, 4])[rest][propagated == 0])
    assert (labels != np.argmax(fuse(net, prop, {1, 3}, weight=1.0), axis=0)).any()  # a plain argmax differs
    # no organ in the plan: the patient model's argmax
    assert np.array_equal(fused_labels(net, set()), np.argmax(net, axis=0))

def test_body_mask_is_the_patient_not_the_couch() -> None:
    from rtseg.adapt.register import body_mask

    hu = np.full((40, 40, 10), -1000.0, np.float32)
    hu[8:30, 8:30, :] = 40.0          # the patient
    hu[14:20, 14:20, 3:7] = -900.0     # air inside (a sinus): the body's, filled
    hu[34:37, 2:38, :] = 200.0         # the couch, apart from the patient
    mask = body_mask(Volume(hu, np.eye(4)), dilate=0)
    assert mask[8:30, 8:30, :].all() and not mask[34:37].any()
    assert mask.sum() == 22 * 22 * 10
    grown = body_mask(Volume(hu, np.eye(4)), dilate=2)
    assert grown[6, 15, 5] and not grown[5, 15, 5]


def test_fusion_weights_follow_the_population_models_dice_on_the_planning_scan() -> None:
    from rtseg.adapt.methods import fusion_weights

    alone = {"propagated": 1.0, "finetuned": 0.0, "population": 0.0}
    assert fusion_weights(0.60) == alone and fusion_weights(0.85) == alone  # a poor network: registration alone
    thirds = {"propagated": 0.3334, "finetuned": 0.3333, "population": 0.3333}
    assert fusion_weights(0.95) == thirds and fusion_weights(0.90) == thirds  # as good as registration: equal votes
    half = fusion_weights(0.875)                                              # half way: half way
    assert half["propagated"] == pytest.approx(2 / 3, abs=1e-4) and half["finetuned"] == half["population"]
    assert fusion_weights(float("nan")) == alone                              # nothing measured: registration alone
    for d in (0.6, 0.86, 0.875, 0.89, 0.97):
        assert sum(fusion_weights(d).values()) == pytest.approx(1.0, abs=1e-4)


def test_with_equal_thirds_any_two_methods_outvote_the_third() -> None:
    """One organ, four voxels: the three methods' one-hot votes (propagated, patient model, population model); with
    one third each the fused organ is where at least two of the three put it. Without a population share the
    network side is the patient model's alone."""
    from rtseg.adapt.methods import fuse, fused_labels, networks

    stack = lambda p: np.stack([1.0 - p, p]).reshape(2, 4, 1, 1).astype(np.float32)  # noqa: E731
    prop, fine, pop = (stack(np.array(v, np.float32)) for v in ([1, 1, 0, 1], [1, 0, 1, 0], [0, 0, 1, 1]))
    w = {"propagated": 0.3334, "finetuned": 0.3333, "population": 0.3333}
    probs = {"propagated": prop, "finetuned": fine, "population": pop}
    labels = fused_labels(fuse(networks(probs, w), prop, {1}, w["propagated"]), {1}).ravel()
    assert labels.tolist() == [1, 0, 1, 1]
    np.testing.assert_array_equal(networks(probs, {"propagated": 0.5, "finetuned": 0.5, "population": 0.0}), fine)
    np.testing.assert_array_equal(networks({"finetuned": fine}, w), fine)
