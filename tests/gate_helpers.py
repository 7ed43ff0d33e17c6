"""Shared by the QA gate and DICOM safety tests: a 'pelvic' checkpoint, one that predicts nothing, phantom series.

The pelvic checkpoint is predict_helpers' fixed network on the demo's grid (4 x 4 x 5 mm) whose plan holds organ
statistics measured on its own predictions for the demo's synthetic pelvic CTs (``generate_patient``, the data
``rtseg demo`` trains on): its training distribution is the demo's, so a phantom pelvis is in distribution and
the shared thorax series (0.98 mm pixels, 500 mm field of view, 40 mm long) is not. (No tests here.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from predict_helpers import make_checkpoint
from rtseg.inference.bundle import load_bundle, save_bundle
from rtseg.inference.predictor import Predictor, load_model
from rtseg.io.dicom.write import write_dicom_series
from rtseg.io.volume import Volume
from rtseg.review.organ_stats import compute_stats
from rtseg.synthetic import generate_patient

TRAINING_SEEDS = range(6)
PELVIS_SEED = 103  # a phantom outside TRAINING_SEEDS


def pelvic_checkpoint(path: Path) -> Path:
    make_checkpoint(path, target_spacing=(4.0, 4.0, 5.0), patch=(32, 32, 16))
    bundle, weights, _ = load_bundle(path)
    predictor = Predictor(load_model(path))
    cases = []
    for seed in TRAINING_SEEDS:
        ct, _ = generate_patient(seed)
        cases.append((ct.array, predictor.predict_labels(ct), ct.affine))
    stats = compute_stats(cases, bundle.class_names)
    save_bundle(path, type(bundle)(**{**bundle.__dict__, "plan": {"organ_stats": stats}}), weights)
    return path


def empty_checkpoint(path: Path) -> Path:
    """predict_helpers' network whose head always says background: every prediction is empty."""
    make_checkpoint(path, target_spacing=(4.0, 4.0, 5.0), patch=(32, 32, 16))
    bundle, weights, _ = load_bundle(path)
    weights["head.bias"][0] += 1e4
    save_bundle(path, bundle, weights)
    return path


def pelvis_series(folder: Path, seed: int = PELVIS_SEED) -> Path:
    """A synthetic pelvic CT (the demo's kind) as a DICOM series."""
    ct, _ = generate_patient(seed)
    write_dicom_series(ct, folder, series_description="rtseg phantom (simulated)")
    return folder


def thin_series(folder: Path, n_slices: int, seed: int = PELVIS_SEED) -> Path:
    """The middle ``n_slices`` slices of a phantom pelvis as a DICOM series."""
    ct, _ = generate_patient(seed)
    k = ct.shape[2] // 2
    affine = ct.affine.copy()
    affine[:3, 3] = ct.affine[:3, :3] @ np.array([0, 0, k]) + ct.affine[:3, 3]
    write_dicom_series(Volume(ct.array[:, :, k:k + n_slices], affine), folder)
    return folder
