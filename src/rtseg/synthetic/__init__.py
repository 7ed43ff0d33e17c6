"""Synthetic data with exact labels: pelvic CT phantoms (demo, tests, benchmarks) and simple test/benchmark shapes.

- :mod:`~rtseg.synthetic.patient` assembles one pelvic patient from the anatomy parts
  (:mod:`body`, :mod:`bones`, :mod:`bladder`, :mod:`prostate`, :mod:`rectum`) and :mod:`scanner` effects;
- :mod:`~rtseg.synthetic.dataset` writes phantom datasets (NIfTI or legacy_npy layout);
- :mod:`~rtseg.synthetic.blobs` makes tiny learnable datasets for tests;
- :mod:`~rtseg.synthetic.ellipsoids` makes big ellipsoid cases for the benchmarks.

Contrasts are deliberately realistic where it matters for learning: prostate (~40 HU) against
urine (~10 HU) is low contrast, the prostate-rectum interface is a thin fat plane, and the rectum's
ends continue into unlabelled bowel, as in clinical contours.
"""
from __future__ import annotations

from rtseg.synthetic.canvas import BLADDER, FEMUR_L, FEMUR_R, N_CLASSES, PROSTATE, RECTUM
from rtseg.synthetic.dataset import (
    DEFAULT_SPLIT_FRACTIONS,
    MANIFEST_NAME,
    PHANTOM_LAYOUTS,
    legacy_npy_arrays,
    split_counts,
    write_phantom_dataset,
)
from rtseg.synthetic.patient import DEFAULT_SHAPE, DEFAULT_SPACING, generate_patient

__all__ = [
    "BLADDER", "DEFAULT_SHAPE", "DEFAULT_SPACING", "DEFAULT_SPLIT_FRACTIONS", "FEMUR_L", "FEMUR_R", "MANIFEST_NAME",
    "N_CLASSES", "PHANTOM_LAYOUTS", "PROSTATE", "RECTUM", "generate_patient", "legacy_npy_arrays", "split_counts",
    "write_phantom_dataset",
]
