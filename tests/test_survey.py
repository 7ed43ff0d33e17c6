"""One survey of the training data: start-up reads each case once; the grid follows one precedence."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from synth import make_nifti_dataset

import rtseg.io.nifti as nifti_module
from rtseg.config import config_from_dict
from rtseg.data.datasets import list_cases
from rtseg.data.grid import auto_patch_size, choose_preprocessing, complete_grid, needs_survey
from rtseg.data.plan import Plan, PlanNormalization
from rtseg.data.survey import survey_cases
from rtseg.io.nifti import read_nifti
from rtseg.training.data_setup import prepare_training_data
from rtseg.training.trainer import fit



def _cfg(root: Path, **dataset: object) -> object:
    return config_from_dict({
        "CUDA": False,
        "MODEL": {"NAME": "ResUnet_3D", "BASE_FILTERS": 2},
        "DATASET": {"NAME": "nifti", "PATH": str(root), "N_CLASSES": 6, "AUGMENT": False, **dataset},
        "TRAINING": {"ITER_MAX": 2, "BATCH_SIZE": 2, "VAL_INTERVAL": 2, "PRINT_INTERVAL": 1, "MEMORY_BUDGET_GIB": 0.01},
    })


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts every NIfTI file opened for reading (nibabel.load under rtseg.io.nifti), by split and name."""
    reads: Counter = Counter()
    real = nifti_module.nib.load

    def counting(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - a pass-through spy
        reads[f"{Path(path).parent.name}/{Path(path).name}"] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nifti_module.nib, "load", counting)
    return reads


def test_training_start_up_reads_each_training_case_once(tmp_path, count_reads):
    """PLAN: auto + zscore statistics + partial labels + organ statistics: still one read per file."""
    root = make_nifti_dataset(tmp_path / "d", n_train=3, n_val=1, shape=(24, 24, 16))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"case001": ["prostate", "bladder"]}))
    cfg = _cfg(root, PLAN="auto", NORMALIZE="zscore_dataset", PARTIAL_LABELS=str(partial))
    fit(cfg, "once", run_dir=tmp_path / "run")
    train_files = {f"train/{p.name}" for p in (root / "train").glob("*.nii.gz")}
    val_files = {f"val/{p.name}" for p in (root / "val").glob("*.nii.gz")}
    assert set(count_reads) >= train_files | val_files
    assert {n: count_reads[n] for n in train_files} == {n: 1 for n in train_files}
    assert {n: count_reads[n] for n in val_files} == {n: 1 for n in val_files}  # validation reads them once too
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["n_cases"] == 3 and plan["organ_stats"]["n_cases"] == 3  # plan and QA statistics from the one survey


def test_survey_statistics_equal_an_independent_count(tmp_path):
    root = make_nifti_dataset(tmp_path / "d", n_train=3, n_val=1, shape=(20, 22, 12), spacing=(1.0, 1.25, 2.5))
    refs = list_cases(_cfg(root).DATASET, "train")
    survey = survey_cases(refs, 6)
    labels = [read_nifti(r.label).array.astype(np.int64) for r in refs]
    images = [read_nifti(r.image).array.astype(np.float64) for r in refs]
    expected = sum(np.bincount(lab.ravel(), minlength=6)[:6] for lab in labels)
    assert survey.class_voxels().tolist() == expected.tolist()
    fg = np.concatenate([img[lab > 0] for img, lab in zip(images, labels)])  # < 100k voxels: no subsampling
    mean, std, (lo, hi) = survey.intensity_statistics((-1024.0, 3071.0))
    clipped = np.clip(fg, max(-1024.0, np.percentile(fg, 0.5)), min(3071.0, np.percentile(fg, 99.5)))
    assert mean == pytest.approx(clipped.mean()) and std == pytest.approx(clipped.std())
    assert sorted(map(tuple, survey.spacings.tolist())) == [(1.0, 1.25, 2.5)] * 3  # RAS axes as stored here


def _plan(mode: str = "zscore_dataset") -> Plan:
    return Plan((2.0, 2.0, 3.0), (16, 16, 8), PlanNormalization(mode, 10.0, 5.0, (-100.0, 200.0)))


def test_grid_precedence_config_key_over_plan_over_data(tmp_path):
    root = make_nifti_dataset(tmp_path / "d", n_train=2, n_val=1, shape=(24, 24, 16))
    survey = survey_cases(list_cases(_cfg(root).DATASET, "train"), 6)
    plan_only = choose_preprocessing(_cfg(root).DATASET, _plan(), survey)
    assert plan_only.target_spacing == (2.0, 2.0, 3.0) and plan_only.normalization.mean == 10.0
    assert plan_only.normalization.window == (-100.0, 200.0)
    explicit = _cfg(root, SPACING=[1.5, 1.5, 2.0], NORMALIZE="ct_window", HU_WINDOW=[-50, 50], PATCH_SIZE=[8, 8, 8]).DATASET
    pre = choose_preprocessing(explicit, _plan(), survey)
    assert pre.target_spacing == (1.5, 1.5, 2.0) and pre.normalization.mode == "ct_window"
    assert pre.normalization.window == (-50.0, 50.0)
    assert complete_grid(explicit, _plan(), pre, survey, 8).patch_size == (8, 8, 8)  # PATCH_SIZE over the plan's
    assert complete_grid(_cfg(root).DATASET, _plan(), plan_only, survey, 8).patch_size == (16, 16, 8)
    data_only = choose_preprocessing(_cfg(root).DATASET, None, None)  # stored spacing recorded from the data
    grid = complete_grid(_cfg(root).DATASET, None, data_only, survey, 8)
    assert grid.preprocessing.target_spacing == (1.5, 1.5, 2.0) and grid.patch_size == (24, 24, 16)
    assert not needs_survey(_cfg(root).DATASET, None) and needs_survey(_cfg(root, PLAN="auto").DATASET, None)
    assert needs_survey(_cfg(root, NORMALIZE="zscore_dataset").DATASET, None)


def test_auto_patch_from_the_survey_fits_every_prepared_case(tmp_path):
    root = make_nifti_dataset(tmp_path / "d", n_train=3, n_val=1, shape=(30, 26, 18), spacing=(1.2, 1.2, 2.0))
    data = prepare_training_data(_cfg(root, SPACING=[2.0, 2.0, 2.0]), stride=4)
    shapes = np.array([c.image.shape for c in data.train])
    assert data.patch_size == auto_patch_size(shapes, 4)  # from the network-grid shapes the cases really have
    assert all(p <= s for p, s in zip(data.patch_size, shapes.min(axis=0)))
