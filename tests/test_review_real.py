"""QA and review pages on the real data in ../shared/data (skipped where it is absent)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from browser import open_page, require_browser

from rtseg.cli.main import main
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.review.organ_stats import case_facts, summarize
from rtseg.review.qa import case_qa

PELVIS_NAMES = ["background", "urinary_bladder", "prostate", "femur_left", "femur_right", "colon", "hip_left", "hip_right", "sacrum"]


def test_real_pelvis_prostate_cut_off_at_the_lower_edge_is_flagged(shared_data) -> None:
    ct = read_nifti(shared_data / "pelvis-ct" / "pelvis_ct.nii.gz")
    lab = read_nifti(shared_data / "pelvis-ct" / "pelvis_labels.nii.gz", np.uint8)
    qa = case_qa(lab.array, ct.affine, PELVIS_NAMES, ct=ct.array)
    texts = [f["text"] for f in qa["flags"]]
    assert "prostate touches the scan's inferior edge: may be cut off" in texts  # the data's README says so
    assert not any(t.startswith("urinary_bladder") for t in texts)  # the bladder lies inside the scan


@pytest.fixture(scope="module")
def openkbp():
    from conftest import DATA

    root = DATA / "openkbp" / "train"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (../shared/data is absent)")
    meta = json.loads((root / "train.json").read_text())
    names = [meta["labels"][str(i)] for i in range(len(meta["labels"]))]

    def load(c: dict):
        ct = read_nifti(root / f"{c['id']}_ct.nii.gz")
        lab = read_nifti(root / f"{c['id']}_labels.nii.gz")
        return ct, lab, {names.index(o) for o in c["organs"]}

    facts = [case_facts(lab.array, ct.affine, names, ct.array, present) for ct, lab, present in map(load, meta["cases"][:40])]
    by_id = {c["id"]: c for c in meta["cases"]}
    held_out = [c["id"] for c in meta["cases"][40:] if {"Brainstem", "Mandible"} <= set(c["organs"])]
    return names, summarize(facts, names), lambda case_id: load(by_id[case_id]), held_out


@pytest.mark.slow
def test_openkbp_statistics_and_flags_on_held_out_cases(openkbp) -> None:
    names, stats, load, held_out = openkbp
    assert stats["n_cases"] == 40 and stats["input"]["hu_p01"][0] == -1024
    # a held-out CT whose scan holds almost no tissue (99.6 % of voxels at -1,024 HU)
    ct, lab, _ = load("openkbp_train_143")
    qa = case_qa(lab.array, ct.affine, names, ct=ct.array, stats=stats)
    assert any(f["text"].endswith("little or no tissue in the scan") for f in qa["flags"])
    # a held-out case with the mandible removed and the brainstem doubled
    ct, lab, present = load(held_out[0])
    labels = lab.array.copy()
    labels[labels == 7] = 0
    brain = labels == 1
    from scipy import ndimage

    while (labels == 1).sum() < 2 * brain.sum():
        labels[ndimage.binary_dilation(labels == 1) & (labels == 0)] = 1
    qa = case_qa(labels, ct.affine, names, ct=ct.array, stats=stats)
    rules = {(f["organ"], f["rule"]) for f in qa["flags"]}
    assert ("Mandible", "missing") in rules and ("Brainstem", "volume") in rules


def test_review_page_of_a_real_dicom_series(shared_data, tmp_path) -> None:
    from rtseg.io.dicom.series import read_dicom_series

    series = shared_data / "dicom-ct-series"
    ct = read_dicom_series(series)
    body = (ct.array > -500).astype(np.uint8)  # a 'body' contour on the series' grid
    write_nifti(ct.with_array(body), tmp_path / "body.nii.gz", np.uint8)
    out = tmp_path / "series.html"
    assert main(["review", "--ct", str(series), "--labels", str(tmp_path / "body.nii.gz"), "--class-names", "background,body",
                 "--out", str(out)]) == 0
    assert out.stat().st_size < 5_000_000
    require_browser()
    with open_page(out) as (page, errors):
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        assert page.eval_on_selector("#view-pred-axial", "e => [e.width, e.height]") == [512, 512]
        page.screenshot(path=str(tmp_path / "series.png"), full_page=True)
        assert errors == []


@pytest.mark.slow
def test_page_of_real_ct_slices_at_512x512x160_stays_under_5_mb(shared_data, tmp_path) -> None:
    """The real series' 20 slices repeated to 160: real CT noise and air, the size a planning CT has."""
    from rtseg.io.dicom.series import read_dicom_series
    from rtseg.review.page import review_page, write_page

    ct = read_dicom_series(shared_data / "dicom-ct-series")
    hu = np.concatenate([ct.array] * 8, axis=2)
    body = (hu > -500).astype(np.uint8)
    page = review_page(hu, body, ct.affine, ["background", "body"], [(255, 0, 0)], title="real 512x512x160")
    size = write_page(page, tmp_path / "real160.html").stat().st_size
    print(f"review page of real CT slices, 512x512x160: {size / 1e6:.2f} MB")
    assert size < 5_000_000
