"""Curation flags implanted faults in training contours, none on clean cases, and exclusions reach training."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from archive_export import CLASSES, phantom
from rtseg.cli.main import main
from rtseg.config.schema import DatasetConfig
from rtseg.data.datasets import list_cases, load_partial_labels
from rtseg.io.archive.outputs import write_dataset_json
from rtseg.io.naming import ct_file, labels_file
from rtseg.io.nifti import write_nifti

FAULTS = {"c1": "swapped femoral heads", "c2": "bladder 3x", "c3": "rectum gap", "c4": "prostate on the wrong slices"}


def _implant(case: str, lab: np.ndarray, usual_bladder: int) -> np.ndarray:
    lab = lab.copy()
    if case == "c1":
        left, right = lab == 4, lab == 5
        lab[left], lab[right] = 5, 4
    elif case == "c2":
        b = lab == 2
        while np.count_nonzero(b) < 3 * usual_bladder:
            b = ndimage.binary_dilation(b) & ((lab == 0) | b)
        lab[b] = 2
    elif case == "c3":
        z = np.flatnonzero((lab == 3).any(axis=(0, 1)))
        mid = int(z[len(z) // 2])
        sl = lab[:, :, mid - 1:mid + 2]
        sl[sl == 3] = 0
    elif case == "c4":
        p = lab == 1
        lab[p] = 0
        lab[np.roll(p, -3, axis=2)] = 1  # three slices (24 mm) too far inferior
    return lab


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("curate")
    cases = {f"c{i}": phantom(200 + i) for i in range(9)}
    usual = int(np.median([np.count_nonzero(lab == 2) for _, lab in cases.values()]))
    records = {}
    for case, (ct, lab) in cases.items():
        write_nifti(ct, out / ct_file(case))
        write_nifti(ct.with_array(_implant(case, lab, usual).astype(np.uint8)), out / labels_file(case))
        records[case] = {"contoured": CLASSES[1:], "shape": list(ct.shape)}
    write_dataset_json(out, CLASSES, records)
    return out / "rtseg_dataset.json"


def test_curation_flags_faults_and_no_clean_case(dataset, capsys) -> None:
    assert main(["convert", "curate", "--dataset", str(dataset)]) == 0
    result = json.loads((dataset.parent / "curation" / "curation.json").read_text())
    rules = {c: {(f["organ"], f["rule"]) for f in q["flags"]} for c, q in result["cases"].items()}
    assert {("femoral_head_left", "laterality"), ("femoral_head_right", "laterality")} <= rules["c1"]
    assert ("bladder", "volume") in rules["c2"]
    assert ("rectum", "gap") in rules["c3"]
    assert ("prostate", "position") in rules["c4"]
    for case in FAULTS:
        assert all(organ in FAULTS[case].replace("femoral heads", "femoral_head_left femoral_head_right") or rule == "volume"
                   for organ, rule in rules[case] if organ), (case, rules[case])
    clean = {c: r for c, r in rules.items() if c not in FAULTS}
    assert all(not r for r in clean.values()), clean
    pages = sorted(p.name for p in (dataset.parent / "curation").glob("*_review.html"))
    assert pages == [f"{c}_review.html" for c in sorted(FAULTS)]
    index = (dataset.parent / "curation" / "index.html").read_text()
    assert "rtseg convert exclude" in index and "c2_review.html" in index
    assert "c1: femoral_head_left lies" in capsys.readouterr().out


def test_exclusions_reach_training(dataset) -> None:
    assert main(["convert", "exclude", "--dataset", str(dataset), "--case", "c2", "--reason", "bladder 3x"]) == 0
    assert main(["convert", "exclude", "--dataset", str(dataset), "--case", "c3", "--organ", "rectum"]) == 0
    cfg = DatasetConfig(NAME="nifti", PATH=str(dataset.parent), N_CLASSES=6, CLASS_NAMES=CLASSES, SPLITS=str(dataset),
                        PARTIAL_LABELS=str(dataset))
    listed = {r.case_id for s in ("train", "val", "test") for r in list_cases(cfg, s)}
    assert "c2" not in listed and "c3" in listed and len(listed) == 8
    known = load_partial_labels(dataset, ["c3", "c4"], CLASSES)
    assert known["c3"] == [0, 1, 2, 4, 5] and known["c4"] == [0, 1, 2, 3, 4, 5]
    assert main(["convert", "exclude", "--dataset", str(dataset), "--case", "c2", "--undo"]) == 0
    assert "c2" in {r.case_id for s in ("train", "val", "test") for r in list_cases(cfg, s)}
    assert main(["convert", "exclude", "--dataset", str(dataset), "--case", "c3", "--organ", "liver"]) == 2
