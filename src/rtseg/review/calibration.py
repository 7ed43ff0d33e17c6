"""How far the network's probabilities can be trusted: reliability diagram, ECE, temperature scaling.

Top-label calibration (Guo et al. 2017): voxels are binned by their largest class probability
(the confidence); in a calibrated model each bin's accuracy (label == most probable class)
equals its mean confidence. ECE is the voxel-weighted mean gap. Background dominates a CT, so
callers pass a ``mask`` (e.g. the body, or voxels within a few mm of any organ) to measure where
it matters. A temperature T > 0 divides the logits before the softmax; it is fitted on
validation voxels by minimising the negative log-likelihood, which keeps every argmax (labels
do not change) and only reshapes confidences.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import minimize_scalar

from rtseg.errors import DataError

DEFAULT_BINS = 15
#: Temperatures searched (log-uniform bracket); outside it the fit is reported as hitting the bound.
T_BOUNDS = (0.05, 20.0)


def near_organs(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float], mm: float = 10.0) -> np.ndarray:
    """Voxels within ``mm`` of any organ in the ground truth or the prediction: where calibration matters."""
    organs = (np.asarray(gt) > 0) | (np.asarray(pred) > 0)
    if not organs.any():
        return organs
    return ndimage.distance_transform_edt(~organs, sampling=spacing) <= mm


def _flatten(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(classes, voxels) scores and (voxels,) labels restricted to ``mask``."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim < 2 or scores.shape[1:] != labels.shape:
        raise DataError(f"{what}: expected shape (classes, *{labels.shape}), found {scores.shape}")
    s = scores.reshape(scores.shape[0], -1)
    y = labels.reshape(-1)
    if mask is not None:
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if m.shape != y.shape:
            raise DataError(f"mask shape {np.shape(mask)} differs from labels shape {labels.shape}")
        s, y = s[:, m], y[m]
    if y.size == 0:
        raise DataError(f"{what}: no voxels to measure (empty mask)")
    if y.min() < 0 or y.max() >= s.shape[0]:
        raise DataError(f"{what}: labels must be 0..{s.shape[0] - 1}, found {int(y.min())}..{int(y.max())}")
    return s, y


def reliability(prob: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None,
                n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Reliability-diagram data and ECE of softmax probabilities (classes first) against true labels."""
    p, y = _flatten(prob, labels, mask, "probabilities")
    conf = p.max(axis=0).astype(np.float64)
    correct = (p.argmax(axis=0) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / count, np.nan)
        acc = np.where(count > 0, acc_sum / count, np.nan)
    gaps = np.where(count > 0, np.abs(acc - mean_conf), 0.0)
    ece = float(np.sum(count * gaps) / count.sum())
    return {
        "n_voxels": int(count.sum()), "bin_edges": [float(e) for e in edges],
        "count": [int(c) for c in count],
        "confidence": [None if np.isnan(v) else float(v) for v in mean_conf],
        "accuracy": [None if np.isnan(v) else float(v) for v in acc],
        "ece": ece, "mce": float(gaps.max()), "accuracy_overall": float(correct.mean()),
        "confidence_overall": float(conf.mean()),
    }


def log_softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of ``logits / T`` over axis 0 (classes first)."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise DataError(f"temperature must be a positive number, got {temperature}")
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=0))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, mask: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood (nats per voxel) of the true labels."""
    s, y = _flatten(logits, labels, mask, "logits")
    lp = log_softmax(s.astype(np.float64) / temperature, axis=0)
    return float(-lp[y, np.arange(y.size)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    """The temperature minimising validation NLL, with the NLL before and after.

    ``logits`` may be log-probabilities (e.g. the log of TTA-averaged softmax): a temperature on
    them is the same reshaping of confidence.
    """
    s, y = _flatten(logits, labels, mask, "logits")
    s = s.astype(np.float64)
    cols = np.arange(y.size)

    def loss(log_t: float) -> float:
        return float(-log_softmax(s / np.exp(log_t), axis=0)[y, cols].mean())

    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    t = float(np.exp(res.x))
    return {"temperature": t, "nll_before": loss(0.0), "nll_after": float(res.fun),
            "at_bound": bool(min(abs(res.x - lo), abs(res.x - hi)) < 1e-3), "n_voxels": int(y.size)}
