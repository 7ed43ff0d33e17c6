"""Phantom cases, training statistics and softmax-like probabilities shared by the review tests."""
from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from rtseg.labels import PELVIS_CLASS_NAMES, PELVIS_COLOR_MAP
from rtseg.synthetic import generate_patient
from rtseg.review.organ_stats import compute_stats

NAMES = PELVIS_CLASS_NAMES
COLORS = PELVIS_COLOR_MAP
CLEAN_SEED = 103  # a held-out phantom with every organ inside the training ranges (see test_clean_case_has_no_flags)


@functools.lru_cache(maxsize=1)
def training_stats() -> dict:
    cases = [generate_patient(s) for s in range(12)]
    return compute_stats([(ct.array, lab.array, ct.affine) for ct, lab in cases], NAMES)


def clean_case():
    return generate_patient(CLEAN_SEED)


def soft_probabilities(labels: np.ndarray, n_classes: int, eps: float = 0.05, sigma: float = 0.0) -> np.ndarray:
    """Softmax-like probabilities from labels: one-hot, optionally blurred, mixed with eps of uniform; sums to 1."""
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(n_classes)])
    if sigma > 0:
        onehot = np.stack([ndimage.gaussian_filter(o, sigma) for o in onehot])
        onehot /= onehot.sum(axis=0, keepdims=True)
    return (1 - eps) * onehot + eps / n_classes
