"""Former home of the pelvic phantoms, kept so code outside rtseg that imports it still works.

Everything lives in :mod:`rtseg.synthetic` now; import from there.
"""
from __future__ import annotations

from rtseg.synthetic import (  # noqa: F401  (re-exports)
    BLADDER,
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    DEFAULT_SPLIT_FRACTIONS,
    FEMUR_L,
    FEMUR_R,
    MANIFEST_NAME,
    N_CLASSES,
    PROSTATE,
    RECTUM,
    generate_patient,
    legacy_npy_arrays,
    split_counts,
    write_phantom_dataset,
)

seed_arrays = legacy_npy_arrays  # the old name
