"""``rtseg predict`` with contour QA: qa.json, summary sorted by flags, probabilities NIfTI, review pages, exit codes.

Everything runs the real Predictor on phantoms (tests/predict_helpers.py); the checkpoint's organ
statistics are measured on its own predictions for normal phantoms, so a normal case is quiet and
an implanted anomaly is flagged.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from browser import open_page, require_browser
from predict_helpers import make_checkpoint, phantom

from rtseg.cli.main import main
from rtseg.inference.bundle import load_bundle, save_bundle
from rtseg.inference.predictor import TTA_FLIPS, Predictor, load_model
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.volume import Volume, affine_from_spacing
from rtseg.review.organ_stats import compute_stats

AFFINE = affine_from_spacing((2.0, 2.0, 2.0))


def anomalous(seed: int = 7) -> np.ndarray:
    """A phantom with half its body replaced by air: the checkpoint's 'prostate' (its body label) halves."""
    arr = phantom(seed=seed)
    arr[:20] = -1000
    return arr


@pytest.fixture(scope="module")
def ckpt_stats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose plan holds organ statistics of its own predictions on normal phantoms."""
    path = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "stats.pt")
    bundle, weights, _ = load_bundle(path)
    predictor = Predictor(load_model(path))
    cases = []
    for seed in range(6):
        vol = Volume(phantom(seed=seed), AFFINE)
        cases.append((vol.array, predictor.predict_labels(vol), vol.affine))
    stats = compute_stats(cases, bundle.class_names)
    save_bundle(path, type(bundle)(**{**bundle.__dict__, "plan": {"organ_stats": stats}}), weights)
    return path


@pytest.fixture(scope="module")
def ckpt_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "plain.pt")


def write_ct(path: Path, arr: np.ndarray) -> Path:
    return write_nifti(Volume(arr, AFFINE), path)


def predict(*args: str) -> int:
    return main(["predict", *args])


def test_qa_json_flags_the_implanted_anomaly_and_summary_puts_it_first(tmp_path, ckpt_stats, caplog):
    src = tmp_path / "in"
    src.mkdir()
    write_ct(src / "a_normal_ct.nii.gz", phantom(seed=11))
    write_ct(src / "b_anomaly_ct.nii.gz", anomalous())
    out = tmp_path / "out"
    assert predict("--checkpoint", str(ckpt_stats), "--input", str(src), "--output", str(out), "--tta") == 0
    normal = json.loads((out / "a_normal_qa.json").read_text())
    anomaly = json.loads((out / "b_anomaly_qa.json").read_text())
    assert normal["rules_skipped"] == [] and anomaly["rules_skipped"] == []  # statistics, probabilities and TTA all used
    assert not [f for f in normal["flags"] if f["rule"] == "volume"]
    organ = next(r for r in anomaly["organs"] if r["organ"] == "prostate")
    labels = read_nifti(out / "b_anomaly_pred.nii.gz").array
    assert organ["volume_ml"] == pytest.approx(np.count_nonzero(labels == 1) * 8 / 1000, abs=1e-3)
    volume = [f for f in organ["flags"] if f["rule"] == "volume"]
    assert len(volume) == 1 and "prostate" in volume[0]["text"] and "below the 1st percentile of training" in volume[0]["text"]
    assert anomaly["argmax_agreement"] == 1.0 and 0 < organ["mean_confidence"] <= 1
    assert organ["tta_disagreement"] is not None and 0 <= organ["tta_disagreement"] <= 1
    assert anomaly["flag_weight"] > normal["flag_weight"]
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["case"] for r in rows] == ["b_anomaly", "a_normal"]  # most flagged first, not input order
    assert int(rows[0]["n_flags"]) == anomaly["n_flags"] and volume[0]["text"] in rows[0]["flags"]
    assert "QA without training comparisons" not in caplog.text


def test_input_checks_run_before_contouring_and_old_checkpoints_say_once(tmp_path, ckpt_stats, ckpt_plain, caplog):
    ct = write_ct(tmp_path / "shifted_ct.nii.gz", phantom(seed=3) + 1024)  # no air near -1000 HU: not HU
    assert predict("--checkpoint", str(ckpt_stats), "--input", str(ct), "--output", str(tmp_path / "o1")) == 0
    assert "case shifted: CT 1st intensity percentile" in caplog.text
    qa = json.loads((tmp_path / "o1" / "shifted_qa.json").read_text())
    assert qa["flags"][0]["rule"] == "input" and "not a CT in HU" in qa["flags"][0]["text"]
    caplog.clear()
    src = tmp_path / "two"
    src.mkdir()
    for i in range(2):
        write_ct(src / f"p{i}_ct.nii.gz", phantom(seed=i))
    assert predict("--checkpoint", str(ckpt_plain), "--input", str(src), "--output", str(tmp_path / "o2")) == 0
    assert caplog.text.count("QA without training comparisons") == 1
    qa = json.loads((tmp_path / "o2" / "p0_qa.json").read_text())
    assert any("no training statistics" in s for s in qa["rules_skipped"]) and "tta (no TTA passes)" in qa["rules_skipped"]


def test_tta_pass_labels_are_each_mirrored_runs_own_argmax(ckpt_plain):
    vol = Volume(phantom(seed=2), AFFINE)
    loaded = load_model(ckpt_plain)
    full = Predictor(loaded, tta=True).predict_full(vol)
    assert full.pass_labels is not None and len(full.pass_labels) == 4
    np.testing.assert_array_equal(full.pass_labels[0], Predictor(loaded).predict_labels(vol))  # the unmirrored pass
    assert all(p.shape == vol.shape and p.dtype == np.uint8 for p in full.pass_labels)
    np.testing.assert_array_equal(full.probabilities.argmax(0), full.labels)
    assert Predictor(loaded).predict_full(vol).pass_labels is None
    # independently: pass k is the plain prediction of the mirrored CT, mirrored back (RAS grid, no resampling;
    # whole volume, so both runs tile the same windows). TTA_FLIPS dims 3, 4 are the y (A-P) and z (I-S) axes.
    whole = Predictor(loaded, tta=True, skip_air=False).predict_full(vol)
    plain = Predictor(loaded, skip_air=False)
    for flips, got in zip(TTA_FLIPS, whole.pass_labels):
        axes = tuple(d - 2 for d in flips)
        mirrored = Volume(np.ascontiguousarray(np.flip(vol.array, axes)) if axes else vol.array, vol.affine)
        want = plain.predict_labels(mirrored)
        np.testing.assert_array_equal(got, np.flip(want, axes) if axes else want)


@pytest.mark.parametrize("dtype, tol", [("uint8", 3 / 510), ("uint16", 3 / 131070)])
def test_saved_probabilities_sum_to_one_and_their_argmax_is_the_labels(tmp_path, ckpt_plain, dtype, tol):
    ct = write_ct(tmp_path / "p_ct.nii.gz", phantom(seed=5))
    out = tmp_path / "out"
    assert predict("--checkpoint", str(ckpt_plain), "--input", str(ct), "--output", str(out), "--save-probabilities", dtype) == 0
    img = nib.load(str(out / "p_prob.nii.gz"))
    assert img.shape == (*phantom(seed=5).shape, 3) and np.allclose(img.affine, AFFINE)
    assert img.get_data_dtype() == np.dtype(dtype)
    assert img.dataobj.slope == pytest.approx(1 / np.iinfo(dtype).max)
    prob = np.moveaxis(img.get_fdata(dtype=np.float32), -1, 0)
    assert np.abs(prob.sum(axis=0) - 1).max() <= tol
    labels = read_nifti(out / "p_pred.nii.gz").array
    top2 = np.sort(prob, axis=0)[-2:]
    clear = top2[1] - top2[0] > 2 * float(img.dataobj.slope)  # where rounding cannot swap the two largest classes
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(prob.argmax(0)[clear], labels[clear])


def test_calibrated_temperature_reshapes_probabilities_never_labels(tmp_path, ckpt_plain):
    bundle, weights, _ = load_bundle(ckpt_plain)
    hot = tmp_path / "t2.pt"
    save_bundle(hot, bundle.with_calibration({"temperature": 2.0}), weights)
    vol = Volume(phantom(seed=4), AFFINE)
    lab1, p1 = Predictor(load_model(ckpt_plain)).predict_with_probabilities(vol)
    lab2, p2 = Predictor(load_model(hot)).predict_with_probabilities(vol)
    np.testing.assert_array_equal(lab1, lab2)
    z = np.log(p1.astype(np.float64)) / 2.0  # softmax(logits / T) from the T = 1 probabilities
    ref = np.exp(z - z.max(0)) / np.exp(z - z.max(0)).sum(0)
    np.testing.assert_allclose(p2, ref, atol=2e-5)


@pytest.mark.slow
def test_review_pages_and_index_load_in_chromium_without_errors(tmp_path, ckpt_stats):
    require_browser()
    src = tmp_path / "in"
    src.mkdir()
    write_ct(src / "a_normal_ct.nii.gz", phantom(seed=11))
    write_ct(src / "b_anomaly_ct.nii.gz", anomalous())
    out = tmp_path / "out"
    assert predict("--checkpoint", str(ckpt_stats), "--input", str(src), "--output", str(out), "--format", "nifti", "html") == 0
    for case in ("a_normal", "b_anomaly"):
        with open_page(out / f"{case}_review.html") as (page, errors):
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert not errors, errors
            assert case in page.title()
    with open_page(out / "index.html") as (page, errors):
        names = page.eval_on_selector_all("#cases td.name a", "els => els.map(e => e.textContent)")
        hrefs = page.eval_on_selector_all("#cases td.name a", "els => els.map(e => e.getAttribute('href'))")
        assert not errors, errors
    assert names == ["b_anomaly", "a_normal"] and hrefs == ["b_anomaly_review.html", "a_normal_review.html"]


def test_exit_2_and_no_output_when_every_case_fails_on_bad_input(tmp_path, ckpt_plain, capsys):
    arr = phantom(seed=1).astype(np.float32)
    arr[3, 4, 5] = np.nan
    bad = write_ct(tmp_path / "nan_ct.nii.gz", arr)
    out = tmp_path / "out"
    assert predict("--checkpoint", str(ckpt_plain), "--input", str(bad), "--output", str(out)) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("rtseg predict")]
    assert len(err) == 1 and "NaN or infinite" in err[0] and str(bad) in err[0]
    assert not out.exists()
    # --nonfinite VALUE reads it with the value in place of NaN
    assert predict("--checkpoint", str(ckpt_plain), "--input", str(bad), "--output", str(out), "--nonfinite", "-1000") == 0
    assert (out / "nan_pred.nii.gz").is_file() and (out / "nan_qa.json").is_file()
    # a batch: the good case goes on, exit 1, the summary says which failed
    batch = tmp_path / "batch"
    batch.mkdir()
    bad.rename(batch / "nan_ct.nii.gz")
    write_ct(batch / "good_ct.nii.gz", phantom(seed=2))
    assert predict("--checkpoint", str(ckpt_plain), "--input", str(batch), "--output", str(tmp_path / "b")) == 1
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "b" / "summary.csv"))}
    assert rows["nan"]["status"] == "failed" and rows["good"]["status"] == "ok"
    assert list(rows) == ["nan", "good"]  # failed cases first
    assert predict("--checkpoint", str(ckpt_plain), "--input", str(batch), "--output", str(tmp_path / "c"), "--nonfinite", "x") == 2
    assert "--nonfinite 'x'" in capsys.readouterr().err
