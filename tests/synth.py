"""Tiny learnable datasets for tests: the generators live in :mod:`rtseg.synthetic.blobs`."""
from __future__ import annotations

from rtseg.synthetic.blobs import blob_case, make_legacy_npy_dataset, make_nifti_dataset

make_seed_dataset = make_legacy_npy_dataset  # the name the training tests use (legacy_npy layout)

__all__ = ["blob_case", "make_legacy_npy_dataset", "make_nifti_dataset", "make_seed_dataset"]
