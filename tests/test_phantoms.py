"""Synthetic pelvic phantoms: determinism, anatomy, HU, geometry and dataset layouts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rtseg.cli.main import main
from rtseg.labels import PELVIS_CLASS_NAMES
from rtseg.errors import ConfigError, DataError
from rtseg.io.nifti import read_nifti
from rtseg.io.legacy_npy import read_npy, legacy_npy_case_ids
from rtseg.synthetic import (
    BLADDER,
    FEMUR_L,
    FEMUR_R,
    PROSTATE,
    RECTUM,
    generate_patient,
    split_counts,
    write_phantom_dataset,
)

SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def patients() -> list:
    return [generate_patient(s) for s in SEEDS]


def _centroid_world(lab, k: int) -> np.ndarray:
    idx = np.argwhere(lab.array == k).astype(float)
    return (lab.affine[:3, :3] @ idx.mean(0)) + lab.affine[:3, 3]


def test_same_seed_same_patient_and_generator_accepted() -> None:
    a_ct, a_lab = generate_patient(7)
    b_ct, b_lab = generate_patient(np.random.default_rng(7))
    assert np.array_equal(a_ct.array, b_ct.array) and np.array_equal(a_lab.array, b_lab.array)
    c_ct, c_lab = generate_patient(8)
    assert not np.array_equal(a_ct.array, c_ct.array)
    assert not np.array_equal(a_lab.array, c_lab.array)


def test_dtypes_labels_and_every_organ_present(patients) -> None:
    for ct, lab in patients:
        assert ct.array.dtype == np.int16 and lab.array.dtype == np.uint8
        assert ct.same_grid(lab)
        assert set(np.unique(lab.array)) == set(range(len(PELVIS_CLASS_NAMES)))


def test_organ_volumes_plausible_in_ml(patients) -> None:
    bounds = {PROSTATE: (15, 80), BLADDER: (45, 600), RECTUM: (20, 250), FEMUR_L: (20, 80), FEMUR_R: (20, 80)}
    bladder = []
    for ct, lab in patients:
        voxel_ml = float(np.prod(lab.spacing)) / 1000.0
        for k, (lo, hi) in bounds.items():
            ml = float((lab.array == k).sum()) * voxel_ml
            assert lo <= ml <= hi, f"label {k}: {ml:.1f} ml outside [{lo}, {hi}]"
        bladder.append((lab.array == BLADDER).sum())
    assert max(bladder) > 1.5 * min(bladder), "bladder filling should vary between patients"


def test_tissue_hu(patients) -> None:
    for ct, lab in patients:
        c, m = ct.array.astype(float), lab.array
        assert -1025 <= np.median(c[:, :, -1][0:3, 0:3]) <= -950  # corner of the field: air
        urine = np.median(c[m == BLADDER])
        prostate = np.median(c[m == PROSTATE])
        femur = np.median(c[(m == FEMUR_L) | (m == FEMUR_R)])
        assert -10 <= urine <= 30
        assert 20 <= prostate <= 55
        assert 10 <= prostate - urine <= 45, "prostate vs bladder: low but non-zero contrast"
        assert femur >= 200
        # inside the body but outside organs there is fat (< -50 HU) and muscle (20..70 HU)
        body = (c > -500) & (m == 0)
        assert (body & (c < -50)).sum() > 1000 and (body & (c > 20) & (c < 70)).sum() > 1000


def test_anatomy_in_ras(patients) -> None:
    for ct, lab in patients:
        left, right = _centroid_world(lab, FEMUR_L), _centroid_world(lab, FEMUR_R)
        assert left[0] < right[0] - 100, "RAS+: +x points to the patient's right"
        pr, bl, re = (_centroid_world(lab, k) for k in (PROSTATE, BLADDER, RECTUM))
        assert pr[2] < bl[2], "prostate is inferior to the bladder"
        assert re[1] < pr[1], "rectum is posterior to the prostate"
        # prostate abuts the bladder: some prostate voxel has a bladder neighbour
        p = lab.array == PROSTATE
        b = lab.array == BLADDER
        touching = (p[:, :, :-1] & b[:, :, 1:]).sum() + (p[:, :, 1:] & b[:, :, :-1]).sum()
        assert touching > 0
        # prostate is at least ~6 voxels across in-plane at 4 mm
        idx = np.argwhere(p)
        assert (idx[:, 0].max() - idx[:, 0].min() + 1) >= 6


def test_geometry_and_anatomy_size_independent_of_grid(tmp_path: Path) -> None:
    ct, lab = generate_patient(3, shape=(40, 36, 24), spacing=(6.0, 7.0, 6.5))
    assert ct.shape == (40, 36, 24)
    assert np.allclose(ct.spacing, (6.0, 7.0, 6.5))
    assert np.allclose(ct.affine[:3, :3], np.diag([6.0, 7.0, 6.5]))
    # same seed on the default grid: femoral heads at the same world position (within a voxel)
    _, lab_ref = generate_patient(3)
    assert np.allclose(_centroid_world(lab, FEMUR_L), _centroid_world(lab_ref, FEMUR_L), atol=5.0)
    write_nifti_roundtrip = tmp_path / "x_ct.nii.gz"
    from rtseg.io.nifti import write_nifti

    write_nifti(ct, write_nifti_roundtrip, dtype=np.int16)
    back = read_nifti(write_nifti_roundtrip)
    assert back.same_grid(ct) and np.array_equal(back.array, ct.array)


def test_bad_grid_refused() -> None:
    with pytest.raises(ConfigError, match="spacing"):
        generate_patient(0, spacing=(4.0, 0.0, 5.0))
    with pytest.raises(ConfigError, match="shape"):
        generate_patient(0, shape=(64, 64))
    with pytest.raises(ConfigError, match="seed"):
        generate_patient(-1)


def test_split_counts() -> None:
    assert split_counts(24) == {"train": 17, "val": 4, "test": 3}
    assert sum(split_counts(7).values()) == 7
    assert split_counts(3) == {"train": 1, "val": 1, "test": 1}
    assert split_counts(10, {"train": 0.8, "test": 0.2}) == {"train": 8, "test": 2}
    with pytest.raises(ConfigError):
        split_counts(5, {"train": -1.0})


def test_nifti_layout(tmp_path: Path) -> None:
    ids = write_phantom_dataset(tmp_path, splits={"train": 2, "test": 1}, layout="nifti", seed=5, shape=(32, 32, 16), spacing=(8, 8, 10))
    assert ids == {"train": ["phantom_000", "phantom_001"], "test": ["phantom_002"]}
    ct = read_nifti(tmp_path / "test" / "phantom_002_ct.nii.gz")
    lab = read_nifti(tmp_path / "test" / "phantom_002_labels.nii.gz")
    ref_ct, ref_lab = generate_patient(5 + 2, shape=(32, 32, 16), spacing=(8, 8, 10))
    assert ct.array.dtype == np.int16 and lab.array.dtype == np.uint8
    assert np.array_equal(ct.array, ref_ct.array) and np.array_equal(lab.array, ref_lab.array)
    assert ct.same_grid(ref_ct) and lab.same_grid(ref_ct)
    manifest = json.loads((tmp_path / "phantoms.json").read_text())
    assert manifest["splits"] == ids and manifest["spacing"] == [8, 8, 10]
    # an existing dataset is not mixed with a new one
    with pytest.raises(DataError, match="not empty"):
        write_phantom_dataset(tmp_path, splits={"train": 1}, layout="nifti", shape=(32, 32, 16), spacing=(8, 8, 10))
    write_phantom_dataset(tmp_path, splits={"train": 1}, layout="nifti", shape=(32, 32, 16), spacing=(8, 8, 10), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["phantom_000_ct.nii.gz", "phantom_000_labels.nii.gz"]


def test_legacy_npy_layout(tmp_path: Path) -> None:
    write_phantom_dataset(tmp_path, 3, layout="legacy_npy", seed=1, split_fractions={"train": 2, "val": 1}, shape=(32, 32, 16), spacing=(8, 8, 10))
    assert {p.name for p in tmp_path.iterdir()} == {"train", "val", "phantoms.json"}
    for split, ids in (("train", ["phantom_000", "phantom_001"]), ("val", ["phantom_002"])):
        d = tmp_path / split
        assert {p.name for p in d.iterdir()} == {"CT", "SEG", "SEG_onehot"}
        assert legacy_npy_case_ids(d) == ids
        for sub in ("CT", "SEG", "SEG_onehot"):
            assert sorted(p.stem for p in (d / sub).glob("*.npy")) == ids
    ct = np.load(tmp_path / "val" / "CT" / "phantom_002.npy")
    seg = np.load(tmp_path / "val" / "SEG" / "phantom_002.npy")
    onehot = np.load(tmp_path / "val" / "SEG_onehot" / "phantom_002.npy")
    ref_ct, ref_lab = generate_patient(3, shape=(32, 32, 16), spacing=(8, 8, 10))
    assert ct.shape == (16, 32, 32)  # (D, H, W): axial slices first, radiological rows/columns
    assert np.array_equal(ct, ref_ct.array[::-1, ::-1, :].transpose(2, 1, 0))
    assert np.array_equal(seg, ref_lab.array[::-1, ::-1, :].transpose(2, 1, 0))
    assert onehot.shape == (6, 16, 32, 32) and np.array_equal(onehot.argmax(0), seg) and np.all(onehot.sum(0) == 1)
    # the io layer reads the legacy_npy layout back onto the original RAS+ geometry (up to the origin)
    vol = read_npy(tmp_path / "val" / "SEG" / "phantom_002.npy", spacing=(10.0, 8.0, 8.0))
    for k in (FEMUR_L, FEMUR_R, PROSTATE, RECTUM):
        assert np.allclose(_centroid_world(vol, k) - _centroid_world(vol, BLADDER), _centroid_world(ref_lab, k) - _centroid_world(ref_lab, BLADDER))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    rc = main(["phantoms", "--out", str(out), "--cases", "2", "--layout", "nifti", "--seed", "4",
               "--shape", "24", "24", "12", "--spacing", "10", "10", "12", "--split-fractions", "train=1", "test=1"])
    assert rc == 0
    assert "wrote 2 phantom patients" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "train").iterdir()) == ["phantom_000_ct.nii.gz", "phantom_000_labels.nii.gz"]
    assert read_nifti(out / "test" / "phantom_001_ct.nii.gz").shape == (24, 24, 12)
    rc = main(["phantoms", "--out", str(out), "--cases", "2", "--shape", "24", "24", "12", "--spacing", "10", "10", "12"])
    err = capsys.readouterr().err
    assert rc == 2 and "not empty" in err and "Traceback" not in err
    rc = main(["phantoms", "--out", str(tmp_path / "b"), "--cases", "2", "--spacing", "4", "-1", "5"])
    assert rc == 2 and "spacing" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def _digest(*arrays: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


# Checksums of the arrays the generators produced before they were split into rtseg.synthetic
# (commit 4f484a3, rtseg/phantoms.py, tests/synth.py, benchmarks/metrics.py, benchmarks/predict.py):
# a refactoring must leave every patient, voxel for voxel, as it was.
PATIENT_DIGESTS = [
    (0, (64, 64, 32), (4.0, 4.0, 5.0), "1015d5be4da716c2"),
    (1, (64, 64, 32), (4.0, 4.0, 5.0), "491607fca3372ba1"),
    (7, (40, 36, 20), (6.0, 7.0, 8.0), "97f9a263b08df75f"),
    (12, (24, 24, 12), (10.0, 10.0, 12.0), "086c75ffa6a9a6bb"),
    (123, (48, 56, 28), (5.0, 4.5, 6.0), "493cb632773a0b99"),
]


@pytest.mark.parametrize("seed, shape, spacing, digest", PATIENT_DIGESTS)
def test_patients_identical_to_before_the_split(seed: int, shape: tuple, spacing: tuple, digest: str) -> None:
    ct, lab = generate_patient(seed, shape, spacing)
    assert _digest(ct.array, lab.array, ct.affine, lab.affine) == digest


def test_test_and_benchmark_generators_identical_to_before_the_split() -> None:
    from rtseg.synthetic.blobs import blob_case
    from rtseg.synthetic.ellipsoids import ellipsoid_ct, perturbed_segmentation

    for seed, shape, n, radius, digest in [
        (0, (32, 32, 32), 6, (3.0, 5.0), "b867880863a86bae"),
        (3, (32, 32, 32), 3, (5, 8), "c83a94bde4be876b"),
        (5, (32, 16, 16), 6, (3.0, 5.0), "9153225c681c00f3"),
    ]:
        assert _digest(*blob_case(np.random.default_rng(seed), shape, n, radius)) == digest
    assert _digest(*perturbed_segmentation((256, 192, 48), 0)) == "f737e5bdc66b4815"
    assert _digest(*perturbed_segmentation((240, 200, 40), 2)) == "a435263771d184de"
    assert _digest(*ellipsoid_ct((96, 96, 40), 0)) == "6a1bead269e64b7c"
    assert _digest(*ellipsoid_ct((200, 180, 30), 2)) == "c81d7ed5e92f3e46"


def test_layout_old_spelling_and_bad_layout(tmp_path: Path) -> None:
    from rtseg.synthetic import write_phantom_dataset as write

    write(tmp_path / "a", splits={"train": 1}, layout="legacy_npy", shape=(32, 32, 16), spacing=(8, 8, 10))
    write(tmp_path / "b", splits={"train": 1}, layout="seed", shape=(32, 32, 16), spacing=(8, 8, 10))
    for d in ("a", "b"):
        assert json.loads((tmp_path / d / "phantoms.json").read_text())["layout"] == "legacy_npy"
    assert np.array_equal(np.load(tmp_path / "a/train/CT/phantom_000.npy"), np.load(tmp_path / "b/train/CT/phantom_000.npy"))
    with pytest.raises(ConfigError, match="layout"):
        write(tmp_path / "c", splits={"train": 1}, layout="png")
