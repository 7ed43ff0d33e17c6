"""nnU-Net v2 raw datasets train and validate in rtseg; convert round-trips them exactly; layouts are one registry."""
from __future__ import annotations

import ast
import filecmp
import json
from pathlib import Path

import numpy as np
import pytest

from archive_export import CLASSES, phantom
from rtseg.cli.main import main
from rtseg.config.schema import DatasetConfig
from rtseg.data.datasets import list_cases, load_case
from rtseg.errors import ConfigError, DataError
from rtseg.io.layouts.case_refs import CaseRef, Layout, SplitQuery
from rtseg.io.layouts.registry import register_layout
from rtseg.io.nifti import write_nifti


def _nnunet_dataset(root: Path, n_train: int = 5, n_test: int = 2) -> None:
    """As nnU-Net's own conventions write one: imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz, dataset.json."""
    for i in range(n_train + n_test):
        ct, lab = phantom(300 + i)
        tr = i < n_train
        case = f"pelvis_{i:03d}"
        write_nifti(ct, root / ("imagesTr" if tr else "imagesTs") / f"{case}_0000.nii.gz")
        write_nifti(ct.with_array(lab.astype(np.uint8)), root / ("labelsTr" if tr else "labelsTs") / f"{case}.nii.gz")
    meta = {"channel_names": {"0": "CT"}, "labels": {n: i for i, n in enumerate(CLASSES)}, "numTraining": n_train,
            "file_ending": ".nii.gz", "name": "Pelvis", "description": "phantoms"}
    (root / "dataset.json").write_text(json.dumps(meta, indent=4))


def _cfg(root: Path) -> DatasetConfig:
    return DatasetConfig(NAME="nnunet", PATH=str(root), N_CLASSES=len(CLASSES), CLASS_NAMES=CLASSES)


def test_nnunet_layout_lists_train_val_test(tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_Pelvis"
    _nnunet_dataset(root)
    tr, va, te = (list_cases(_cfg(root), s) for s in ("train", "val", "test"))
    assert len(tr) == 4 and len(va) == 1 and {r.case_id for r in te} == {"pelvis_005", "pelvis_006"}
    img, lab = load_case(tr[0], len(CLASSES))
    assert img.shape == lab.shape and int(lab.array.max()) == 5
    folds = {r.case_id for k in range(2) for r in list_cases(_cfg(root).model_copy(update={"FOLD": k, "FOLDS": 2}), "val")}
    assert folds == {r.case_id for r in tr}  # folds are drawn from the train split, as for every layout
    with pytest.raises(DataError, match="N_CLASSES is 3"):
        list_cases(DatasetConfig(NAME="nnunet", PATH=str(root), N_CLASSES=3), "train")
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "labels": {**meta["labels"], "gland": [1, 2]}}))
    with pytest.raises(DataError, match="region-based"):
        list_cases(_cfg(root), "train")


def test_convert_round_trips_nnunet_exactly(tmp_path: Path) -> None:
    src = tmp_path / "Dataset001_Pelvis"
    _nnunet_dataset(src)
    assert main(["convert", "nnunet-to-nifti", "--input", str(src), "--out", str(tmp_path / "nifti")]) == 0
    assert main(["convert", "nifti-to-nnunet", "--input", str(tmp_path / "nifti"), "--out", str(tmp_path / "back")]) == 0
    a = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    b = sorted(p.relative_to(tmp_path / "back") for p in (tmp_path / "back").rglob("*") if p.is_file())
    assert a == b
    assert all(filecmp.cmp(src / p, tmp_path / "back" / p, shallow=False) for p in a if p.name != "dataset.json")
    assert json.loads((src / "dataset.json").read_text()) == json.loads((tmp_path / "back" / "dataset.json").read_text())
    # and NIfTI -> nnU-Net -> NIfTI: the same pairs and dataset JSON
    assert main(["convert", "nnunet-to-nifti", "--input", str(tmp_path / "back"), "--out", str(tmp_path / "again")]) == 0
    for p in (tmp_path / "nifti").glob("*.nii.gz"):
        assert filecmp.cmp(p, tmp_path / "again" / p.name, shallow=False)
    first, second = (json.loads((tmp_path / d / "rtseg_dataset.json").read_text()) for d in ("nifti", "again"))
    assert first == second
    cfg = DatasetConfig(NAME="nifti", PATH=str(tmp_path / "nifti"), N_CLASSES=6, SPLITS=str(tmp_path / "nifti" / "rtseg_dataset.json"))
    assert {r.case_id for r in list_cases(cfg, "val")} == {r.case_id for r in list_cases(_cfg(src), "val")}


def test_nnunet_dataset_trains_and_validates(tmp_path: Path) -> None:
    root = tmp_path / "Dataset001_Pelvis"
    _nnunet_dataset(root, n_train=3, n_test=1)
    cfg = tmp_path / "nn.yml"
    cfg.write_text(f"""MODEL: {{NAME: ResUnet_3D, BASE_FILTERS: 4}}
CUDA: false
DATASET: {{NAME: nnunet, PATH: {str(root)!r}, N_CLASSES: 6, CLASS_NAMES: {CLASSES}, PATCH_SIZE: [32, 32, 16],
           NORMALIZE: ct_window, HU_WINDOW: [-250, 350]}}
TRAINING: {{ITER_MAX: 2, VAL_INTERVAL: 2, PRINT_INTERVAL: 1, BATCH_SIZE: 1, WORKERS: 0}}
""")
    assert main(["train", "-c", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    assert main(["val", "-c", str(cfg), "--checkpoint", str(ckpt), "--out", str(tmp_path / "v")]) == 0
    assert main(["test", "-c", str(cfg), "--checkpoint", str(ckpt), "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t" / "test_metrics.json").read_text())


def test_a_layout_is_one_module_and_one_registration(tmp_path: Path) -> None:
    """A toy layout (PATH/<split>.txt listing image files; labels beside them as <id>.lab.nii.gz)."""
    def list_toy(q: SplitQuery) -> list[CaseRef]:
        ids = (q.root / f"{q.split}.txt").read_text().split()
        return [CaseRef(i, q.root / f"{i}.nii.gz", q.root / f"{i}.lab.nii.gz", "toy_txt") for i in ids]

    register_layout(Layout("toy_txt", list_toy, "PATH/<split>.txt"))
    ct, lab = phantom(7)
    write_nifti(ct, tmp_path / "a.nii.gz")
    write_nifti(ct.with_array(lab.astype(np.uint8)), tmp_path / "a.lab.nii.gz")
    (tmp_path / "train.txt").write_text("a\n")
    (ref,) = list_cases(DatasetConfig(NAME="toy_txt", PATH=str(tmp_path), N_CLASSES=6), "train")
    img, labels = load_case(ref, 6)
    assert np.array_equal(labels.array, lab)
    with pytest.raises(ValueError, match="already registered"):
        register_layout(Layout("toy_txt", list_toy, ""))
    with pytest.raises(ConfigError, match="DATASET.NAME 'toy_nope': expected one of .*nnunet"):
        list_cases(DatasetConfig(NAME="toy_nope", PATH=str(tmp_path), N_CLASSES=6), "train")


def test_datasets_and_folds_do_not_import_each_other() -> None:
    src = Path(__file__).resolve().parents[1] / "src" / "rtseg" / "data"
    for a, b in (("datasets", "folds"), ("folds", "datasets")):
        tree = ast.parse((src / f"{a}.py").read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert f"rtseg.data.{b}" not in mods or a == "datasets", f"data/{a}.py imports data/{b}.py"
    folds = ast.parse((src / "folds.py").read_text())
    assert not any(isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("rtseg.data") for n in ast.walk(folds))
