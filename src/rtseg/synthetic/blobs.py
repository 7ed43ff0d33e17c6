"""Tiny learnable datasets for tests: one bright sphere of distinct intensity per class, on noise.

Far simpler than the pelvic phantoms (no anatomy, voxel units): a network learns them in a few
iterations, so tests of training, resuming and data loading stay fast.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rtseg.io.nifti import write_nifti
from rtseg.io.legacy_npy import write_legacy_npy_case
from rtseg.io.volume import Volume, affine_from_spacing


def blob_case(
    rng: np.random.Generator, shape: tuple[int, ...] = (32, 32, 32), n_classes: int = 6, radius: tuple[float, float] = (3.0, 5.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Each organ a sphere with its own mean HU, randomly placed; noise on top."""
    img = rng.normal(0.0, 20.0, size=shape).astype(np.float32) - 100.0
    lab = np.zeros(shape, dtype=np.uint8)
    grid = np.indices(shape).astype(np.float32)
    for c in range(1, n_classes):
        r = rng.uniform(*radius)
        centre = [rng.uniform(r + 1, s - r - 1) for s in shape]
        d2 = sum((g - c0) ** 2 for g, c0 in zip(grid, centre))
        m = d2 <= r * r
        lab[m] = c
        img[m] = 150.0 * c + rng.normal(0, 20.0, size=int(m.sum()))
    return img, lab


def make_legacy_npy_dataset(
    root: Path,
    n_train: int = 4,
    n_val: int = 2,
    n_test: int = 2,
    shape: tuple[int, ...] = (32, 32, 32),
    n_classes: int = 6,
    seed: int = 0,
    radius: tuple[float, float] = (3.0, 5.0),
) -> Path:
    """``root/<split>/CT|SEG|SEG_onehot/p<split><i>.npy``, the legacy_npy layout (DATASET.NAME prostateCT_vol)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            img, lab = blob_case(rng, shape, n_classes, radius)
            write_legacy_npy_case(root / split, f"p{split}{i:02d}", img, lab, n_classes)
    return root


def make_nifti_dataset(
    root: Path,
    n_train: int = 4,
    n_val: int = 2,
    shape: tuple[int, ...] = (32, 32, 24),
    spacing: tuple[float, float, float] = (1.5, 1.5, 2.0),
    n_classes: int = 6,
    seed: int = 0,
) -> Path:
    """``root/<split>/case<i>_ct.nii.gz`` + ``_labels.nii.gz``; the test split has as many cases as val."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_val)):
        for i in range(n):
            img, lab = blob_case(rng, shape, n_classes)
            aff = affine_from_spacing(spacing, (-20.0, 10.0, 5.0))
            write_nifti(Volume(img.astype(np.int16), aff), root / split / f"case{i:03d}_ct.nii.gz")
            write_nifti(Volume(lab, aff), root / split / f"case{i:03d}_labels.nii.gz")
    return root
