"""Choose the post-processing per organ from out-of-fold predictions, as nnU-Net does.

Each held-out prediction is scored raw, with the largest connected component kept, with enclosed holes
filled, and with both (largest component first, as ``postprocess_organs`` applies them). An operation is
switched on for an organ only where it raises that organ's mean Dice over the cross-validation cases; a
tie keeps the simpler choice. The variants are computed for all organs at once (the operations act on
each organ's own voxels; hole filling can only take background), so one case costs four label passes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from rtseg.inference.ensemble import OrganPostprocessing
from rtseg.inference.postprocess import fill_holes, keep_largest_component

VARIANTS: dict[str, OrganPostprocessing] = {
    "none": OrganPostprocessing(),
    "largest_component": OrganPostprocessing(largest_component=True),
    "fill_holes": OrganPostprocessing(fill_holes=True),
    "both": OrganPostprocessing(largest_component=True, fill_holes=True),
}


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """2|P∩G| / (|P|+|G|) of two masks; NaN when both are empty (that case says nothing about the organ)."""
    total = int(pred.sum()) + int(gt.sum())
    return float("nan") if total == 0 else 2.0 * int(np.logical_and(pred, gt).sum()) / total


def variant_labels(pred: np.ndarray) -> dict[str, np.ndarray]:
    """The prediction under each variant, every organ at once."""
    largest = keep_largest_component(pred)
    return {"none": pred, "largest_component": largest, "fill_holes": fill_holes(pred), "both": fill_holes(largest)}


@dataclass
class PostprocessScores:
    """Per organ and variant, the Dice of each out-of-fold case (NaN-free: empty-empty cases are left out)."""

    class_names: Sequence[str]
    dice: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, pred: np.ndarray, gt: np.ndarray, known: Optional[set[int]] = None) -> None:
        """One case; ``known``: the organs contoured in it (None: all)."""
        variants = variant_labels(pred)
        for c, organ in enumerate(self.class_names[1:], start=1):
            if known is not None and c not in known:
                continue
            truth = gt == c
            for name, labels in variants.items():
                d = dice(labels == c, truth)
                if not math.isnan(d):
                    self.dice.setdefault(organ, {v: [] for v in VARIANTS})[name].append(d)

    def means(self) -> dict[str, dict[str, float]]:
        return {organ: {v: float(np.mean(ds)) for v, ds in per.items()} for organ, per in self.dice.items()}


def choose_postprocessing(scores: PostprocessScores, tolerance: float = 1e-9) -> dict[str, OrganPostprocessing]:
    """Per organ, the variant with the highest mean CV Dice; one with more operations must beat the others by
    more than ``tolerance`` (so an operation is on only where it raises the Dice)."""
    chosen = {}
    for organ, means in scores.means().items():
        best = "none"
        for name in ("largest_component", "fill_holes", "both"):
            if means[name] > means[best] + tolerance:
                best = name
        chosen[organ] = VARIANTS[best]
    return chosen


def choice_report(scores: PostprocessScores, chosen: dict[str, OrganPostprocessing]) -> dict[str, Any]:
    """JSON-ready: per organ the chosen switches, the mean Dice of every variant and the cases counted."""
    means = scores.means()
    return {organ: {"largest_component": p.largest_component, "fill_holes": p.fill_holes,
                    "cv_dice": means[organ], "n_cases": len(scores.dice[organ]["none"])} for organ, p in chosen.items()}


def format_choice_table(report: dict[str, Any]) -> str:
    """Organ | mean CV Dice per variant | chosen."""
    head = f"{'organ':<22}{'none':>8}{'largest':>9}{'fill':>8}{'both':>8}  chosen"
    lines = [head, "-" * len(head)]
    for organ, r in report.items():
        d = r["cv_dice"]
        on = [n for n, flag in (("largest component", r["largest_component"]), ("fill holes", r["fill_holes"])) if flag]
        lines.append(f"{organ:<22}{d['none']:>8.4f}{d['largest_component']:>9.4f}{d['fill_holes']:>8.4f}{d['both']:>8.4f}  "
                     f"{' + '.join(on) or 'none'}")
    return "\n".join(lines)
