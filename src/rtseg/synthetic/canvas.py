"""What every anatomy part paints on: the HU and label arrays, the label values and the tissue densities.

Labels follow ``PELVIS_CLASS_NAMES``: 0 background, 1 prostate, 2 bladder, 3 rectum,
4 left femoral head, 5 right femoral head.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtseg.labels import PELVIS_CLASS_NAMES

N_CLASSES = len(PELVIS_CLASS_NAMES)
PROSTATE, BLADDER, RECTUM, FEMUR_L, FEMUR_R = 1, 2, 3, 4, 5


@dataclass
class Canvas:
    """HU (float32, air to start) and labels (uint8, background to start), painted part by part."""

    hu: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> "Canvas":
        return cls(hu=np.full(shape, -1000.0, np.float32), labels=np.zeros(shape, np.uint8))


@dataclass(frozen=True)
class Tissue:
    """Per-patient densities (HU); prostate against urine is deliberately low contrast."""

    fat: float
    pelvic_fat: float
    muscle: float
    urine: float
    prostate: float
    cortex: float
    marrow: float


def draw_tissue(rng: np.random.Generator) -> Tissue:
    hu_fat = rng.uniform(-110, -90)
    hu_pelvic_fat = hu_fat + rng.uniform(0, 15)
    hu_muscle = rng.uniform(38, 50)
    hu_urine = rng.uniform(5, 15)
    hu_prostate = rng.uniform(35, 45)
    hu_cortex = rng.uniform(850, 1150)
    hu_marrow = rng.uniform(200, 300)
    return Tissue(hu_fat, hu_pelvic_fat, hu_muscle, hu_urine, hu_prostate, hu_cortex, hu_marrow)
