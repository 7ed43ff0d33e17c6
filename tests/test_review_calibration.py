"""Calibration: ECE against an independent loop, and temperature scaling recovering a known temperature."""
from __future__ import annotations

import numpy as np
import pytest

from rtseg.errors import DataError
from rtseg.review.calibration import apply_temperature, fit_temperature, nll, reliability


def _sample(rng: np.random.Generator, n: int, c: int, t_true: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits z and labels drawn from softmax(z / t_true): a model over-confident by t_true."""
    z = rng.normal(0, 3.0, (c, n))
    p = apply_temperature(z, t_true)
    u = rng.random(n)
    y = (p.cumsum(axis=0) < u).sum(axis=0)
    return z, np.minimum(y, c - 1)


def _ece_loop(prob: np.ndarray, y: np.ndarray, n_bins: int) -> float:
    """Textbook ECE, one voxel at a time (Guo et al. 2017), bins (lo, hi] with the first one [0, hi]."""
    bins: list[list[tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for i in range(y.size):
        conf = float(prob[:, i].max())
        b = 0
        while b < n_bins - 1 and conf > (b + 1) / n_bins:
            b += 1
        bins[b].append((conf, int(prob[:, i].argmax()) == int(y[i])))
    total = sum(len(b) for b in bins)
    return sum(len(b) / total * abs(np.mean([c for c, _ in b]) - np.mean([a for _, a in b])) for b in bins if b)


def test_ece_matches_a_per_voxel_loop() -> None:
    rng = np.random.default_rng(0)
    z, y = _sample(rng, 3000, 4, 2.0)
    prob = apply_temperature(z, 1.0)
    r = reliability(prob.reshape(4, 30, 10, 10), y.reshape(30, 10, 10), n_bins=10)
    assert r["ece"] == pytest.approx(_ece_loop(prob, y, 10), abs=1e-12)
    assert sum(r["count"]) == 3000 == r["n_voxels"]


def test_calibrated_probabilities_have_small_ece_and_overconfident_ones_do_not() -> None:
    rng = np.random.default_rng(1)
    z, y = _sample(rng, 200_000, 3, 1.0)
    assert reliability(apply_temperature(z, 1.0), y)["ece"] < 0.01
    over = reliability(apply_temperature(z, 0.3), y)
    assert over["ece"] > 0.1 and over["confidence_overall"] > over["accuracy_overall"]


def test_temperature_fit_recovers_the_true_temperature() -> None:
    rng = np.random.default_rng(2)
    z, y = _sample(rng, 100_000, 5, 2.5)
    fit = fit_temperature(z, y)
    assert fit["temperature"] == pytest.approx(2.5, rel=0.05)
    assert fit["nll_after"] < fit["nll_before"] and not fit["at_bound"]
    assert fit["nll_after"] == pytest.approx(nll(z, y, fit["temperature"]), abs=1e-9)
    after = reliability(apply_temperature(z, fit["temperature"]), y)
    assert after["ece"] < reliability(apply_temperature(z, 1.0), y)["ece"]
    # temperature keeps every argmax: labels do not change
    assert np.array_equal(apply_temperature(z, fit["temperature"]).argmax(axis=0), z.argmax(axis=0))


def test_mask_restricts_the_voxels_and_bad_input_is_refused() -> None:
    rng = np.random.default_rng(3)
    z, y = _sample(rng, 1000, 3, 1.0)
    mask = np.zeros(1000, bool)
    mask[:100] = True
    assert reliability(apply_temperature(z, 1.0), y, mask=mask)["n_voxels"] == 100
    with pytest.raises(DataError, match="empty mask"):
        reliability(apply_temperature(z, 1.0), y, mask=np.zeros(1000, bool))
    with pytest.raises(DataError, match="labels must be 0..2"):
        reliability(apply_temperature(z, 1.0), y + 5)
    with pytest.raises(DataError, match="temperature must be a positive"):
        apply_temperature(z, 0.0)


@pytest.mark.parametrize("dtype, tol", [("uint8", 0.5 / 255), ("uint16", 0.5 / 65535), ("float16", 2.0**-11)])
def test_stored_probabilities_sum_to_one_and_keep_the_labels(dtype: str, tol: float) -> None:
    from review_cases import NAMES, clean_case, soft_probabilities

    from rtseg.review.probabilities import load_probabilities, store_probabilities

    _, lab = clean_case()
    prob = soft_probabilities(lab.array, len(NAMES), sigma=1.0)
    back = load_probabilities(*store_probabilities(prob, dtype))
    assert np.abs(back - prob).max() <= tol + 1e-7
    assert np.abs(back.sum(axis=0) - 1).max() <= len(NAMES) * tol + 1e-6
    top2 = np.sort(prob, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 2 * tol
    assert np.array_equal(back.argmax(axis=0)[clear], prob.argmax(axis=0)[clear])
    assert np.mean(prob.argmax(axis=0) == lab.array) > 0.97  # smoothing moves only boundary voxels


def test_near_organs_mask_is_a_distance_band() -> None:
    from rtseg.review.calibration import near_organs

    gt = np.zeros((40, 40, 10), np.uint8)
    gt[20, 20, 5] = 1
    m = near_organs(gt, np.zeros_like(gt), (1.0, 1.0, 2.0), mm=4.0)
    ii, jj, kk = np.indices(gt.shape)
    want = np.sqrt((ii - 20) ** 2 + (jj - 20) ** 2 + (2.0 * (kk - 5)) ** 2) <= 4.0
    assert np.array_equal(m, want)
