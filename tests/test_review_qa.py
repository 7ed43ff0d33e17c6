"""Contour QA: implanted anomalies get the right flags in words, a clean case gets none."""
from __future__ import annotations

import json

import numpy as np
import pytest
from review_cases import NAMES, clean_case, soft_probabilities, training_stats
from scipy import ndimage
from skimage.measure import label as sk_label

from rtseg.errors import DataError
from rtseg.review.organ_stats import VOLUME_PERCENTILES, case_facts, check_stats, summarize
from rtseg.review.qa import case_qa, sort_cases, summary_columns
from rtseg.review.uncertainty import check_probabilities, tta_disagreement

FEMUR_R, PROSTATE, BLADDER, RECTUM = 5, 1, 2, 3


def _rules(qa: dict) -> set[tuple[str | None, str]]:
    return {(f["organ"], f["rule"]) for f in qa["flags"]}


def test_clean_case_has_no_flags() -> None:
    ct, lab = clean_case()
    prob = soft_probabilities(lab.array, len(NAMES))
    qa = case_qa(lab.array, ct.affine, NAMES, ct=ct.array, stats=training_stats(), probabilities=prob,
                 tta_labels=[lab.array, lab.array.copy()], case="clean")
    assert qa["flags"] == [] and qa["n_flags"] == 0 and qa["flag_weight"] == 0
    assert qa["rules_skipped"] == [] and qa["argmax_agreement"] == 1.0
    json.dumps(qa)  # JSON-ready as written to qa.json
    voxel_ml = float(np.prod(ct.spacing)) / 1000
    for row in qa["organs"]:
        mask = lab.array == row["label"]
        assert row["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, abs=1e-3)
        assert row["components"] == sk_label(mask, connectivity=3).max()  # independent 26-connectivity count
        assert row["tta_disagreement"] == 0.0


def test_argmax_agreement_from_the_network_labels_equals_the_probabilities_argmax() -> None:
    """Post-processing moved some voxels: the agreement counted against the network's own labels is the one
    counted against the probabilities' argmax (and the hand count)."""
    ct, lab = clean_case()
    prob = soft_probabilities(lab.array, len(NAMES))
    network = prob.argmax(0).astype(np.uint8)
    final = network.copy()
    moved = np.argwhere(final == BLADDER)[:37]
    final[tuple(moved.T)] = 0
    by_prob = case_qa(final, ct.affine, NAMES, ct=ct.array, probabilities=prob)
    by_labels = case_qa(final, ct.affine, NAMES, ct=ct.array, probabilities=prob, network_labels=network)
    assert by_prob["argmax_agreement"] == by_labels["argmax_agreement"] == round(1 - 37 / final.size, 5) < 1.0
    assert by_prob["organs"] == by_labels["organs"]


def _double(labels: np.ndarray, c: int) -> np.ndarray:
    """Grow organ c into its surroundings until its volume has at least doubled."""
    out = labels.copy()
    target = 2 * int((labels == c).sum())
    while (out == c).sum() < target:
        out[ndimage.binary_dilation(out == c)] = c
    return out


def test_implanted_anomalies_are_flagged_in_words() -> None:
    ct, lab = clean_case()
    stats = training_stats()
    labels = _double(lab.array, FEMUR_R)
    labels[labels == PROSTATE] = 0
    # rectum cut into 3 pieces by two 1-slice gaps through its middle
    zs = np.nonzero((labels == RECTUM).any(axis=(0, 1)))[0]
    for z in (zs[len(zs) // 3], zs[2 * len(zs) // 3]):
        labels[:, :, z][labels[:, :, z] == RECTUM] = 0
    qa = case_qa(labels, ct.affine, NAMES, ct=ct.array, stats=stats, case="anomalies")
    texts = {f["rule"]: f["text"] for f in qa["flags"]}
    assert _rules(qa) == {("prostate", "missing"), ("femoral_head_right", "volume"), ("rectum", "components")}
    vol = qa["organs"][FEMUR_R - 1]["volume_ml"]
    p99 = stats["organs"]["femoral_head_right"]["volume_ml"]["p99"]
    assert texts["volume"] == f"femoral_head_right {vol:,.0f} ml: above the 99th percentile of training, {p99:,.1f} ml"
    assert texts["missing"] == "prostate missing"
    assert texts["components"] == "rectum in 3 pieces (training: always 1)"
    assert qa["flag_weight"] == 3 + 2 + 1


def test_organ_cut_off_by_the_field_of_view() -> None:
    ct, lab = clean_case()
    zs = np.nonzero((lab.array == BLADDER).any(axis=(0, 1)))[0]
    top = int(zs[len(zs) // 2])  # the scan ends halfway up the bladder
    qa = case_qa(lab.array[:, :, :top], ct.affine, NAMES, ct=ct.array[:, :, :top], stats=training_stats())
    cut = [f for f in qa["flags"] if f["rule"] == "cut_off"]
    assert "bladder touches the scan's superior edge: may be cut off" in [f["text"] for f in cut]
    assert all("superior" in f["text"] for f in cut) and all(f["weight"] == 2 for f in cut)
    # the shorter scan is also outside the training field of view (160 mm)
    fov = [f["text"] for f in qa["flags"] if f["rule"] == "input"]
    assert fov == [f"field of view {top * 5.0:g} mm along z (inferior-superior) outside training (160 to 160 mm)"]


def test_mr_like_intensities_are_flagged_before_contouring() -> None:
    ct, lab = clean_case()
    mr = np.clip((ct.array.astype(np.float32) + 1000) * 0.8, 0, None).astype(np.int16)  # no air at -1000
    qa = case_qa(lab.array, ct.affine, NAMES, ct=mr, stats=training_stats())
    flags = [f for f in qa["flags"] if f["rule"] == "input"]
    assert len(flags) == 2 and all(f["organ"] is None and f["weight"] == 3 for f in flags)
    lo, hi = training_stats()["input"]["hu_p01"]
    assert flags[0]["text"] == f"CT 1st intensity percentile 0, training {lo:,.0f} to {hi:,.0f}: no air near -1,000 HU, not a CT in HU?"
    assert flags[1]["text"].startswith("CT 99th intensity percentile ") and flags[1]["text"].endswith("or not HU?")


def test_spacing_outside_training_is_flagged() -> None:
    ct, lab = clean_case()
    affine = ct.affine.copy()
    affine[:3, :3] *= 2.0  # same voxels, twice the size
    qa = case_qa(lab.array, affine, NAMES, ct=ct.array, stats=training_stats())
    words = " ".join(f["text"] for f in qa["flags"] if f["rule"] == "input")
    assert "voxel spacing 8 mm along x" in words and "field of view 512 mm along x" in words


def test_measures_do_not_depend_on_array_orientation() -> None:
    """A flipped/permuted array with the matching affine (as DICOM LPS data arrive) gives the same QA."""
    ct, lab = clean_case()
    stats = training_stats()
    perm = (1, 0, 2)
    arr_l = np.transpose(lab.array, perm)[::-1]
    arr_c = np.transpose(ct.array, perm)[::-1]
    aff = ct.affine[:, [1, 0, 2, 3]].copy()
    aff[:3, 3] += aff[:3, 0] * (arr_l.shape[0] - 1)
    aff[:3, 0] *= -1
    a = case_qa(lab.array[:, :, :30], ct.affine, NAMES, ct=ct.array[:, :, :30], stats=stats)
    b = case_qa(np.ascontiguousarray(arr_l[:, :, :30]), aff, NAMES, ct=np.ascontiguousarray(arr_c[:, :, :30]), stats=stats)
    for ra, rb in zip(a["organs"], b["organs"]):
        assert ra["volume_ml"] == rb["volume_ml"] and ra["edges"] == rb["edges"]
        np.testing.assert_allclose(ra["centroid_offset_mm"], rb["centroid_offset_mm"], atol=0.02)
    assert a["input"] == b["input"] and a["flags"] == b["flags"]


def test_boundary_entropy_matches_the_analytic_value_and_flags_uncertainty() -> None:
    ct, lab = clean_case()
    n = len(NAMES)
    eps = 0.05
    prob = soft_probabilities(lab.array, n, eps=eps)
    p = np.array([1 - eps + eps / n] + [eps / n] * (n - 1))
    h = float(-(p * np.log(p)).sum() / np.log(n))  # every voxel has this entropy
    qa = case_qa(lab.array, ct.affine, NAMES, ct=ct.array, stats=training_stats(), probabilities=prob)
    for row in qa["organs"]:
        assert row["boundary_entropy"] == pytest.approx(h, abs=1e-4)
        assert row["boundary_confidence"] == pytest.approx(p[0], abs=1e-4)
    # the rectum's probabilities mixed 70 % with uniform: uncertain
    unsure = prob.copy()
    near = ndimage.binary_dilation(lab.array == RECTUM, iterations=2)
    unsure[:, near] = 0.3 * unsure[:, near] + 0.7 / n
    qa = case_qa(lab.array, ct.affine, NAMES, ct=ct.array, stats=training_stats(), probabilities=unsure)
    assert _rules(qa) == {("rectum", "uncertain")}


def test_tta_disagreement_is_one_minus_intersection_over_union() -> None:
    ct, lab = clean_case()
    shifted = np.roll(lab.array, 2, axis=1)
    m0, m1 = lab.array == BLADDER, shifted == BLADDER
    expected = 1 - (m0 & m1).sum() / (m0 | m1).sum()
    assert tta_disagreement([lab.array, shifted], BLADDER) == pytest.approx(expected, abs=1e-4)
    qa = case_qa(lab.array, ct.affine, NAMES, tta_labels=[lab.array, np.roll(lab.array, 6, axis=1)])
    assert ("rectum", "tta") in _rules(qa)
    assert any("no training statistics" in s for s in qa["rules_skipped"])


def test_probabilities_are_checked() -> None:
    ct, lab = clean_case()
    prob = soft_probabilities(lab.array, len(NAMES), sigma=1.0)
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-5)
    assert np.mean(np.argmax(prob, axis=0) == lab.array) > 0.97  # blurring moves only boundary voxels
    with pytest.raises(DataError, match="sum to 1"):
        check_probabilities(prob * 0.8, lab.shape, len(NAMES))
    with pytest.raises(DataError, match="expected shape"):
        check_probabilities(prob[:3], lab.shape, len(NAMES))


def test_statistics_are_percentiles_of_the_training_cases() -> None:
    from rtseg.synthetic import generate_patient

    cases = [generate_patient(s) for s in range(5)]
    facts = [case_facts(lab.array, ct.affine, NAMES, ct.array) for ct, lab in cases]
    stats = summarize(facts, NAMES)
    json.dumps(stats)
    assert check_stats({"organ_stats": stats}) == stats  # a whole plan is accepted
    vols = [float((lab.array == BLADDER).sum()) * np.prod(ct.spacing) / 1000 for ct, lab in cases]
    for q in VOLUME_PERCENTILES:
        assert stats["organs"]["bladder"]["volume_ml"][f"p{int(q)}"] == pytest.approx(np.percentile(vols, q), abs=2e-3)
    assert stats["organs"]["bladder"]["presence"] == 1.0 and stats["n_cases"] == 5
    with pytest.raises(DataError, match="not rtseg organ statistics"):
        check_stats({"target_spacing": [1, 1, 1]}, "plan.json")


def test_batch_order_and_summary_columns() -> None:
    qas = [{"case": "a", "n_flags": 1, "flag_weight": 1, "flags": [{"text": "x"}]},
           {"case": "b", "n_flags": 2, "flag_weight": 5, "flags": [{"text": "y"}, {"text": "z"}]},
           {"case": "c", "n_flags": 0, "flag_weight": 0, "flags": []}]
    assert [q["case"] for q in sort_cases(qas)] == ["b", "a", "c"]
    assert summary_columns(qas[1]) == {"n_flags": 2, "flag_weight": 5, "flags": "y; z"}
