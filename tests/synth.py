"""Tiny learnable datasets for tests: the generators live in :mod:`rtseg.synthetic.blobs`."""
from __future__ import annotations

from rtseg.synthetic.blobs import blob_case, make_legacy_npy_dataset, make_nifti_dataset

make_legacy_npy_dataset = make_legacy_npy_dataset  # alias only: the training tests (helper `train`) still import this name

__all__ = ["blob_case", "make_legacy_npy_dataset", "make_nifti_dataset", "make_legacy_npy_dataset"]
