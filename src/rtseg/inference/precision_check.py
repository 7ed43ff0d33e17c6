"""bf16 against fp32 on the same CTs: do the labels agree? (the check behind ``--precision auto``)

The same checkpoint runs twice per CT, once per precision (``Predictor(precision=...)``), and the
labels are compared voxel by voxel and, where ground truth is given, by each precision's Dice per
organ: the bf16 default is acceptable where the mean organ Dice moves by at most ``MAX_DICE_SHIFT``
and at least ``MIN_EQUAL_VOXELS`` of all voxels get the same label (benchmarks/bf16_agreement.py
runs it on the phantom and on OpenKBP validation cases; tests/test_precision.py on a tiny net).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from rtseg.inference.predictor import LoadedModel, Predictor
from rtseg.io.volume import Volume

MAX_DICE_SHIFT = 0.005
MIN_EQUAL_VOXELS = 0.999


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


@dataclass
class CaseAgreement:
    """One CT: voxels with equal labels, and per organ the Dice of each precision against the truth (if any)."""

    case: str
    voxels: int
    equal: int
    dice_between: dict[int, float]  # bf16 vs fp32, organs either labels
    dice_fp32: dict[int, float] = field(default_factory=dict)  # vs truth, organs scored
    dice_bf16: dict[int, float] = field(default_factory=dict)


def compare_labels(case: str, fp32: np.ndarray, bf16: np.ndarray, truth: Optional[np.ndarray] = None,
                   organs: Optional[Sequence[int]] = None) -> CaseAgreement:
    """The agreement of two label volumes (and each against ``truth`` on ``organs``: default every label > 0 in it)."""
    if fp32.shape != bf16.shape:
        raise ValueError(f"label shapes differ: {fp32.shape} vs {bf16.shape}")
    present = sorted((set(np.unique(fp32).tolist()) | set(np.unique(bf16).tolist())) - {0})
    row = CaseAgreement(case, int(fp32.size), int(np.count_nonzero(fp32 == bf16)),
                        {c: dice(fp32 == c, bf16 == c) for c in present})
    if truth is not None:
        scored = organs if organs is not None else [int(c) for c in np.unique(truth) if c]
        row.dice_fp32 = {c: dice(fp32 == c, truth == c) for c in scored}
        row.dice_bf16 = {c: dice(bf16 == c, truth == c) for c in scored}
    return row


def predict_both(loaded: LoadedModel, volume: Volume, device: torch.device | str = "cpu",
                 overlap: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(fp32 labels, bf16 labels) of one CT from the same checkpoint."""
    out = []
    for precision in ("fp32", "bf16"):
        out.append(Predictor(loaded, device, overlap=overlap, precision=precision).predict_labels(volume))
    return out[0], out[1]


def summarize(rows: Iterable[CaseAgreement]) -> dict[str, float | bool | int]:
    """Pooled voxel agreement, mean organ Dice per precision (over every scored case and organ), the checks."""
    rows = list(rows)
    voxels, equal = sum(r.voxels for r in rows), sum(r.equal for r in rows)
    d32 = [v for r in rows for v in r.dice_fp32.values()]
    d16 = [v for r in rows for v in r.dice_bf16.values()]
    between = [v for r in rows for v in r.dice_between.values()]
    out: dict[str, float | bool | int] = {"cases": len(rows), "equal_voxels": equal / max(1, voxels),
                                          "min_dice_bf16_vs_fp32": min(between) if between else 1.0}
    out["voxels_ok"] = out["equal_voxels"] >= MIN_EQUAL_VOXELS
    if d32:
        out["mean_dice_fp32"], out["mean_dice_bf16"] = float(np.mean(d32)), float(np.mean(d16))
        out["mean_dice_shift"] = abs(out["mean_dice_bf16"] - out["mean_dice_fp32"])
        out["dice_ok"] = out["mean_dice_shift"] <= MAX_DICE_SHIFT
    out["ok"] = bool(out["voxels_ok"]) and bool(out.get("dice_ok", True))
    return out


__all__ = ["CaseAgreement", "MAX_DICE_SHIFT", "MIN_EQUAL_VOXELS", "compare_labels", "dice", "predict_both", "summarize"]
