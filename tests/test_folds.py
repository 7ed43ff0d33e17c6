"""Cross-validation folds: disjoint, covering, deterministic, sizes within one, stratified on the contoured organs;
``DATASET.FOLD`` turns the training split into the fold's training part and the validation split into its held-out part."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rtseg.cli.main import main
from rtseg.config.schema import DatasetConfig
from rtseg.data.datasets import list_cases
from rtseg.data.folds import assign_folds
from rtseg.errors import ConfigError
from synth import make_nifti_dataset


def _spread(folds: dict[str, int], organs: dict[str, frozenset[int]], organ: int, n: int) -> int:
    per_fold = [sum(1 for c, f in folds.items() if f == k and organ in organs[c]) for k in range(n)]
    return max(per_fold) - min(per_fold)


def _openkbp_like(n_cases: int, seed: int) -> dict[str, frozenset[int]]:
    """Organs 1..6 contoured with OpenKBP-like rates (the larynx, organ 6, in one case of ten)."""
    rng = np.random.default_rng(seed)
    rates = [0.95, 0.5, 0.3, 0.15, 0.7, 0.1]
    return {f"pt_{i:03d}": frozenset(o + 1 for o, r in enumerate(rates) if rng.random() < r) for i in range(n_cases)}


@pytest.mark.parametrize("n_cases,n_folds,seed", [(25, 5, 0), (40, 5, 3), (31, 4, 7), (10, 5, 1)])
def test_folds_partition_deterministically_with_balanced_organs(n_cases: int, n_folds: int, seed: int) -> None:
    organs = _openkbp_like(n_cases, seed)
    folds = assign_folds(organs, n_folds)
    assert set(folds) == set(organs)  # covering; a dict gives each case one fold: disjoint
    assert set(folds.values()) == set(range(n_folds))
    sizes = np.bincount(list(folds.values()), minlength=n_folds)
    assert sizes.max() - sizes.min() <= 1
    assert assign_folds(dict(reversed(list(organs.items()))), n_folds) == folds  # input order does not matter
    for organ in range(1, 7):
        assert _spread(folds, organs, organ, n_folds) <= 1, (organ, folds)


def test_stratification_beats_a_random_split_on_the_rare_organ() -> None:
    """Five of 25 cases contour organ 2: each of 5 folds holds out exactly one. A seeded random partition of the
    same sizes does so rarely (an independent check that the assignment is not just a shuffle)."""
    organs = {f"c{i:02d}": frozenset({1, 2} if i % 5 == 0 else {1}) for i in range(25)}
    folds = assign_folds(organs, 5)
    held = [sum(1 for c, f in folds.items() if f == k and 2 in organs[c]) for k in range(5)]
    assert held == [1, 1, 1, 1, 1]
    ids = sorted(organs)
    hits = 0
    for s in range(200):
        perm = np.random.default_rng(s).permutation(25)
        random_folds = {ids[p]: i % 5 for i, p in enumerate(perm)}
        hits += _spread(random_folds, organs, 2, 5) == 0
    assert hits < 40  # 5!/5^5 * (multinomial) ~ 4%: random splits rarely balance it


def test_bad_fold_counts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="FOLDS 11"):
        assign_folds({f"c{i}": frozenset({1}) for i in range(10)}, 11)
    with pytest.raises(ValueError, match="FOLD 5 must be below FOLDS 5"):
        DatasetConfig(PATH=".", N_CLASSES=3, FOLD=5, FOLDS=5)


def _dataset(tmp_path: Path, partial: bool) -> DatasetConfig:
    data = make_nifti_dataset(tmp_path / "data", n_train=10, n_val=1)
    shutil.rmtree(data / "val")  # a fold's validation cases come from the training split only
    extra = {}
    if partial:  # the bladder (class 2) contoured in five cases only
        table = {f"case{i:03d}": ["prostate", "rectum"] + (["bladder"] if i % 2 else []) for i in range(10)}
        (tmp_path / "partial.json").write_text(json.dumps(table))
        extra["PARTIAL_LABELS"] = str(tmp_path / "partial.json")
    return DatasetConfig(NAME="nifti", PATH=str(data), N_CLASSES=6, **extra)


@pytest.mark.parametrize("partial", [False, True])
def test_fold_splits_are_the_held_out_parts_of_the_training_split(tmp_path: Path, partial: bool) -> None:
    base = _dataset(tmp_path, partial)
    every = {r.case_id for r in list_cases(base, "train")}
    held_out: list[set[str]] = []
    for k in range(5):
        cfg = base.model_copy(update={"FOLD": k, "FOLDS": 5})
        train = {r.case_id for r in list_cases(cfg, "train")}
        val = {r.case_id for r in list_cases(cfg, "val")}
        assert train.isdisjoint(val) and train | val == every and len(val) == 2
        assert {r.case_id for r in list_cases(cfg, "test")} == {"case000"}  # other splits untouched
        if partial:
            assert sum(int(c[-3:]) % 2 for c in val) == 1  # one bladder-contouring case held out per fold
        held_out.append(val)
    assert set().union(*held_out) == every and sum(map(len, held_out)) == len(every)


def test_absent_is_unknown_stratifies_on_the_labels_present(tmp_path: Path) -> None:
    from rtseg.io.nifti import read_nifti, write_nifti

    base = _dataset(tmp_path, False)
    for i in range(0, 10, 2):  # even cases lose the bladder (class 2)
        path = Path(base.PATH) / "train" / f"case{i:03d}_labels.nii.gz"
        lab = read_nifti(path)
        write_nifti(lab.with_array(np.where(lab.array == 2, 0, lab.array).astype(np.uint8)), path)
    cfg = base.model_copy(update={"ABSENT_IS_UNKNOWN": True})
    for k in range(5):
        val = {r.case_id for r in list_cases(cfg.model_copy(update={"FOLD": k}), "val")}
        assert sum(int(c[-3:]) % 2 for c in val) == 1


def test_train_fold_options_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"DATASET: {{NAME: nifti, PATH: {tmp_path}, N_CLASSES: 3}}\n")
    assert main(["train", "-c", str(cfg), "--folds", "5"]) == 2
    assert "--folds N needs --fold K" in capsys.readouterr().err
    assert main(["train", "-c", str(cfg), "--fold", "5", "--folds", "5"]) == 2
    assert "FOLD 5 must be below FOLDS 5" in capsys.readouterr().err
