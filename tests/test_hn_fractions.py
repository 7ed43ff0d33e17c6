"""The SIMULATED head-and-neck fractions (``rtseg.synthetic.hn_fractions``) and their known motion, on a small
generated neck: a body cylinder, a spinal cord and two parotids."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from rtseg.adapt.register import Registration, warp_probabilities
from rtseg.evaluation.surface import organ_metrics
from rtseg.io.volume import Volume
from rtseg.synthetic.hn_fractions import simulate_hn_fraction, simulate_hn_fraction_and_motion

SPACING = 3.0


def make_neck() -> tuple[Volume, Volume]:
    shape = (56, 56, 48)
    i, j, k = np.indices(shape)
    body = (i - 28) ** 2 + (j - 28) ** 2 < 22 ** 2
    ct = np.where(body, 30.0, -1000.0) + 5.0 * np.sin(i / 3.0) * np.cos(j / 4.0) * body
    labels = np.zeros(shape, np.uint8)
    labels[((i - 28) ** 2 + (j - 36) ** 2 < 3 ** 2)] = 2  # spinal cord along the body
    for c, ci in ((3, 16), (4, 40)):
        labels[((i - ci) ** 2 + (j - 24) ** 2 + (k - 34) ** 2) < 6 ** 2] = c
    ct[labels == 2] = 40.0
    ct[np.isin(labels, (3, 4))] = -60.0
    affine = np.diag([SPACING, SPACING, SPACING, 1.0])
    return Volume(ct.astype(np.int16), affine), Volume(labels, affine)


@pytest.fixture(scope="module")
def neck() -> tuple[Volume, Volume]:
    return make_neck()


def test_the_true_labels_are_the_plan_moved_by_the_known_motion(neck) -> None:
    ct, labels = neck
    fct, truth, motion = simulate_hn_fraction_and_motion(ct, labels, seed=3, fraction=2)
    plain_ct, plain_truth = simulate_hn_fraction(ct, labels, seed=3, fraction=2)
    assert np.array_equal(plain_ct.array, fct.array) and np.array_equal(plain_truth.array, truth.array)
    assert fct.meta["simulated"] is True and truth.meta["simulated"] is True
    moved = ndi.map_coordinates(np.asarray(labels.array), motion.astype(np.float64), order=0, mode="constant", cval=0)
    assert np.array_equal(moved, truth.array)
    shift_mm = np.linalg.norm((motion - np.indices(ct.shape)) * SPACING, axis=0)
    assert 1.0 < float(np.median(shift_mm)) < 25.0  # it moved, by a setup error and some anatomy, not wildly


def test_parotid_shrinkage_matches_the_analytic_volume_loss(neck, monkeypatch) -> None:
    """With the other motions zeroed (their random draws kept), a parotid ball of radius R shrinks to the radius r
    that its backward map sends to R: r (1 + s w(r)) = R, s the drawn linear stretch, w the Gaussian fade."""
    import rtseg.synthetic.hn_fractions as hn

    for name in ("_articulation", "_weight_loss", "_smooth_change"):
        original = getattr(hn, name)
        monkeypatch.setattr(hn, name, lambda *a, _f=original, **k: 0.0 * _f(*a, **k))
    ct, labels = neck
    lab = np.asarray(labels.array)
    for seed in (5, 11):
        fct, _, motion = simulate_hn_fraction_and_motion(ct, labels, seed=seed, fraction=1)
        for c in (3, 4):
            loss = fct.meta[f"parotid_{c}_volume_loss"]
            assert 0.10 <= loss <= 0.30
            pts = np.argwhere(lab == c) * SPACING
            rms = float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1).mean()))
            big_r = (3.0 * len(pts) * SPACING ** 3 / (4.0 * np.pi)) ** (1.0 / 3.0)
            s = 1.0 / (1.0 - loss) ** (1.0 / 3.0) - 1.0
            r = big_r
            for _ in range(50):  # fixed point of r = R / (1 + s w(r))
                r = big_r / (1.0 + s * np.exp(-r * r / (2.0 * (1.6 * rms) ** 2)))
            expected = (r / big_r) ** 3
            # the organ's volume after the motion, from its mask sampled linearly (nearest neighbour would move a
            # 6-voxel ball's count by a few hundred voxels with the sub-voxel setup shift)
            measured = ndi.map_coordinates((lab == c).astype(np.float64), motion, order=1).sum() / len(pts)
            assert measured == pytest.approx(expected, abs=0.03), (seed, c, loss)
            assert measured < 1.0 - 0.6 * loss  # most of the drawn loss, not the whole: the fade is < 1 at the edge


def test_the_plan_warped_by_the_true_motion_scores_what_a_perfect_registration_would(neck) -> None:
    ct, labels = neck
    _, truth, motion = simulate_hn_fraction_and_motion(ct, labels, seed=7, fraction=1)
    ideal = warp_probabilities(Registration("deformable", motion, 1.0, {}, 0.0), np.asarray(labels.array), 5, {2, 3, 4})
    pred = np.argmax(ideal, axis=0)
    for c in (2, 3, 4):
        assert organ_metrics(pred == c, np.asarray(truth.array) == c, (SPACING,) * 3)["dice"] > 0.85
