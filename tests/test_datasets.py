import json

import numpy as np
import pytest

from rtseg.config.schema import DatasetConfig
from rtseg.data.datasets import list_cases, load_case, load_partial_labels
from rtseg.data.normalization import Normalization
from rtseg.data.orientation import to_canonical
from rtseg.data.preprocess import Preprocessing, to_network_grid
from rtseg.errors import DataError
from rtseg.io.nifti import write_nifti
from rtseg.io.legacy_npy import write_npy, write_legacy_npy_case
from rtseg.io.volume import Volume
from synth import make_nifti_dataset


def dataset(name: str, path) -> DatasetConfig:
    """The DATASET section a config with only NAME and PATH set gives."""
    return DatasetConfig(NAME=name, PATH=str(path), N_CLASSES=6)


def test_seed_layout_pairs_by_id_not_order(tmp_path):
    rng = np.random.default_rng(0)
    for cid in ("b", "a", "c"):
        ct = rng.normal(size=(4, 5, 6)).astype(np.float32)
        seg = np.full((4, 5, 6), ord(cid) - ord("a"), np.uint8)
        write_legacy_npy_case(tmp_path / "train", cid, ct, seg)
    refs = list_cases(dataset("prostateCT_vol", tmp_path), "train")
    assert [r.case_id for r in refs] == ["a", "b", "c"]
    for r in refs:
        _, lab = load_case(r, 6)
        assert np.all(lab.array == ord(r.case_id) - ord("a"))


def test_seed_layout_errors(tmp_path):
    write_legacy_npy_case(tmp_path / "train", "p1", np.zeros((4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8))
    write_npy(np.zeros((4, 4, 4), np.float32), tmp_path / "train" / "CT" / "p2.npy")
    with pytest.raises(DataError, match="unpaired files \\(CT without SEG: p2\\)"):
        list_cases(dataset("prostateCT_vol", tmp_path), "train")
    write_npy(np.zeros((4, 4, 5), np.uint8), tmp_path / "train" / "SEG" / "p2.npy")
    refs = list_cases(dataset("prostateCT_vol", tmp_path), "train")
    with pytest.raises(DataError, match=r"p2.npy: label shape \(4, 4, 5\) does not match image shape \(4, 4, 4\)"):
        load_case(refs[1], 6)
    write_npy(np.full((4, 4, 4), 7, np.uint8), tmp_path / "train" / "SEG" / "p2.npy")
    with pytest.raises(DataError, match=r"label values \[7\] outside 0..5"):
        load_case(list_cases(dataset("prostateCT_vol", tmp_path), "train")[1], 6)
    with pytest.raises(DataError, match="split folder not found"):
        list_cases(dataset("prostateCT_vol", tmp_path), "val")
    with pytest.raises(DataError, match="DATASET.PATH .*folder not found"):
        list_cases(dataset("prostateCT_vol", tmp_path / "missing"), "train")


def test_nifti_layout_keeps_geometry_and_reports_missing_labels(tmp_path):
    make_nifti_dataset(tmp_path, n_train=2, n_val=1)
    refs = list_cases(dataset("nifti", tmp_path), "train")
    img, lab = load_case(refs[0], 6)
    assert img.spacing == pytest.approx((1.5, 1.5, 2.0)) and img.origin == pytest.approx((-20.0, 10.0, 5.0))
    (tmp_path / "train" / "case000_labels.nii.gz").unlink()
    with pytest.raises(DataError, match="CT without labels: case000"):
        list_cases(dataset("nifti", tmp_path), "train")


def test_msd_layout_and_splits(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    entries = []
    for i in range(5):
        v = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4))
        write_nifti(v, tmp_path / "imagesTr" / f"pel_{i}.nii.gz")
        write_nifti(v.with_array(np.zeros((4, 4, 4), np.uint8)), tmp_path / "labelsTr" / f"pel_{i}.nii.gz")
        entries.append({"image": f"./imagesTr/pel_{i}.nii.gz", "label": f"./labelsTr/pel_{i}.nii.gz"})
    (tmp_path / "dataset.json").write_text(json.dumps({"training": entries}))
    tr = list_cases(dataset("msd", tmp_path), "train")
    va = list_cases(dataset("msd", tmp_path), "val")
    assert len(tr) == 4 and len(va) == 1 and not {r.case_id for r in tr} & {r.case_id for r in va}
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["pel_0", "pel_1"], "val": ["pel_4"]}))
    assert [r.case_id for r in list_cases(dataset("msd", tmp_path), "val")] == ["pel_4"]


def test_partial_labels_openkbp_form(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps({"cases": [{"id": "c1", "organs": ["Bladder"]}, {"id": "c2", "organs": ["Rectum", "Bladder"]}]}))
    names = ["background", "Bladder", "Rectum"]
    assert load_partial_labels(p, ["c1", "c2", "c3"], names) == {"c1": [0, 1], "c2": [0, 1, 2]}
    p.write_text(json.dumps({"c1": ["Liver"]}))
    with pytest.raises(DataError, match="unknown class 'Liver'"):
        load_partial_labels(p, ["c1"], names)


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([2.0, 1.0, 3.0, 1.0]),
        np.array([[-2.0, 0, 0, 10], [0, -1.0, 0, 5], [0, 0, 3.0, 0], [0, 0, 0, 1]]),  # LPS-like
        np.array([[0, 0, 3.0, 0], [2.0, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]]),  # permuted + flipped
    ],
)
def test_network_grid_round_trip(affine):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 5, size=(6, 7, 8)).astype(np.uint8)
    vol = Volume(arr, affine)
    canon, _ = to_canonical(vol)
    world_axis_of = np.abs(affine[:3, :3]).argmax(0)  # input axis -> world axis it runs along
    expected = np.empty(3)
    expected[world_axis_of] = np.linalg.norm(affine[:3, :3], axis=0)
    assert np.allclose(canon.spacing, expected)
    assert np.all(np.diag(canon.affine)[:3] > 0)  # RAS+: positive diagonal
    # a voxel keeps its world position through canonicalization
    idx = np.array([1, 2, 3, 1.0])
    world = affine @ idx
    cidx = np.linalg.solve(canon.affine, world)
    assert canon.array[tuple(np.round(cidx[:3]).astype(int))] == arr[1, 2, 3]
    spec = Preprocessing(Normalization("none"), None)
    lab, info = to_network_grid(vol, spec, is_label=True)
    assert np.array_equal(info.restore(lab, is_label=True), arr)
    spec2 = Preprocessing(Normalization("none"), (1.0, 1.0, 1.0))
    lab2, info2 = to_network_grid(vol, spec2, is_label=True)
    assert info2.restore(lab2, is_label=True).shape == arr.shape
