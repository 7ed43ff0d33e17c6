"""``rtseg calibrate``: fit the softmax temperature on a split's predictions and store it in the checkpoint.

The network's probabilities are measured where they matter (voxels within ``mm`` of an organ in
the ground truth or the prediction, :func:`rtseg.review.calibration.near_organs`), pooled over
the split's cases on their original grids. The temperature minimising the pooled NLL is stored
as ``extras["calibration"]`` (``rtseg.inference.bundle``); the Predictor then divides the logits
by it before the softmax of the probabilities, so labels never change, only confidences (QA's
uncertainty measures and ``--save-probabilities``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from rtseg.config.schema import DatasetConfig
from rtseg.data.datasets import list_cases, load_case, load_partial_labels
from rtseg.errors import ConfigError
from rtseg.inference.bundle import rewrite_bundle
from rtseg.inference.predictor import Predictor
from rtseg.labels import IGNORE_INDEX
from rtseg.review.calibration import DEFAULT_BINS, apply_temperature, fit_temperature, near_organs, reliability

log = logging.getLogger("rtseg")

#: log(0) guard for probabilities used as logits (float32 softmax underflows far from the boundary).
LOG_FLOOR = 1e-12


@dataclass
class SplitVoxels:
    """Log-probabilities (C, N) and true labels (N,) of the measured voxels of a split."""

    split: str
    n_cases: int
    log_prob: np.ndarray
    labels: np.ndarray


def split_voxels(predictor: Predictor, dataset: DatasetConfig, split: str, mm: float = 10.0) -> SplitVoxels:
    """Every case of ``split`` predicted on its own grid; voxels near organs kept, unknown (partial) labels left out."""
    if predictor.temperature != 1.0:
        raise ConfigError("calibration measures the network's own probabilities: use a Predictor with temperature=1")
    names = list(predictor.bundle.class_names)
    if len(names) != dataset.N_CLASSES:
        raise ConfigError(f"DATASET.N_CLASSES is {dataset.N_CLASSES} but the checkpoint predicts {len(names)} classes")
    refs = list_cases(dataset, split)
    if not refs:
        raise ConfigError(f"split {split!r} has no cases to calibrate on")
    known = load_partial_labels(dataset.PARTIAL_LABELS, [r.case_id for r in refs], names) if dataset.PARTIAL_LABELS else {}
    logs, ys = [], []
    for ref in tqdm(refs, desc=f"calibrate {split}", unit="case"):
        ct, gt = load_case(ref, dataset.N_CLASSES)
        pred = predictor.predict_full(ct, pass_labels=False)
        mask = near_organs(gt.array, pred.labels, ct.spacing, mm) & (gt.array != IGNORE_INDEX)
        if ref.case_id in known:  # a voxel of an uncontoured organ is not known to be background
            unknown = [c for c in range(1, len(names)) if c not in known[ref.case_id]]
            mask &= ~np.isin(pred.labels, unknown)
        logs.append(np.log(np.clip(pred.probabilities[:, mask], LOG_FLOOR, None)))
        ys.append(gt.array[mask].astype(np.int64))
    return SplitVoxels(split, len(refs), np.concatenate(logs, axis=1), np.concatenate(ys))


def _summary(voxels: SplitVoxels, temperature: float, n_bins: int) -> dict[str, Any]:
    before = reliability(np.exp(voxels.log_prob), voxels.labels, n_bins=n_bins)
    after = reliability(apply_temperature(voxels.log_prob, temperature), voxels.labels, n_bins=n_bins)
    return {"split": voxels.split, "n_cases": voxels.n_cases, "n_voxels": int(voxels.labels.size),
            "ece_before": round(before["ece"], 5), "ece_after": round(after["ece"], 5),
            "reliability_before": before, "reliability_after": after}


def calibrate(predictor: Predictor, dataset: DatasetConfig, split: str, eval_split: Optional[str] = None,
              mm: float = 10.0, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The fitted temperature with NLL and reliability before/after on ``split`` (and on ``eval_split``)."""
    fit_on = split_voxels(predictor, dataset, split, mm)
    fit = fit_temperature(fit_on.log_prob, fit_on.labels)
    t = fit["temperature"]
    result: dict[str, Any] = {"temperature": round(t, 5), "nll_before": round(fit["nll_before"], 5),
                              "nll_after": round(fit["nll_after"], 5), "at_bound": fit["at_bound"], "mm": mm,
                              "tta": predictor.tta, "fit": _summary(fit_on, t, n_bins)}
    if fit["at_bound"]:
        log.warning("the fitted temperature %.3g sits at the search bound: the probabilities are far from calibrated", t)
    if eval_split is not None:
        result["eval"] = _summary(split_voxels(predictor, dataset, eval_split, mm), t, n_bins)
    return result


def store_calibration(checkpoint: str | Path, result: dict[str, Any], out: str | Path) -> Path:
    """``checkpoint`` with ``extras["calibration"]`` (temperature and headline figures), written atomically to ``out``."""
    result_fit = result["fit"]
    keep = {k: result[k] for k in ("temperature", "nll_before", "nll_after", "mm", "tta")}
    keep.update(split=result_fit["split"], n_cases=result_fit["n_cases"],
                ece_before=result_fit["ece_before"], ece_after=result_fit["ece_after"])
    return rewrite_bundle(checkpoint, out, lambda bundle: bundle.with_calibration(keep))
