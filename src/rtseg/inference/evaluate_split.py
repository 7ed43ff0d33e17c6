"""Predict the cases of a split with a checkpoint, on their original grids, and score them.

``predict_and_score`` is the one predict-and-score loop: ``rtseg val`` / ``rtseg test``
(``evaluate_split``), ``rtseg demo`` and ``benchmarks/ablation.py`` call it. It lives in
``inference`` because it runs the ``Predictor``; ``rtseg.evaluation`` stays model-free
(label arrays in, numbers and reports out), so ``rtseg evaluate`` needs no model code.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from rtseg.config.schema import Config, DatasetConfig
from rtseg.data.datasets import CaseRef, list_cases, load_case, load_partial_labels
from rtseg.errors import ConfigError
from rtseg.evaluation.confusion import ConfusionMatrix
from rtseg.evaluation.report import write_long_csv
from rtseg.evaluation.surface import case_metrics
from rtseg.inference.postprocess import postprocess
from rtseg.inference.predictor import Predictor, load_model
from rtseg.io.jsonfile import write_json
from rtseg.io.volume import Volume

log = logging.getLogger("rtseg")

CaseHook = Callable[[CaseRef, Volume, Volume, Volume], None]
"""Called after each case with (case, CT, ground truth, prediction), e.g. to save figures."""


@dataclass
class SplitScores:
    """What ``predict_and_score`` measured on one split."""

    split: str
    cases: list[str]
    rows: list[dict[str, Any]]  # one per case and organ: ``case_metrics`` rows with their "case"
    confusion: dict[str, Any]  # the original code base's metrics over the split: overall_acc, mean_acc, freqw_iou, mean_dice, dice


def predict_and_score(predictor: Predictor, dataset: DatasetConfig, split: str,
                      on_case: Optional[CaseHook] = None, largest_component: bool = False,
                      fill_holes: bool = False) -> SplitScores:
    """Predict every case of ``split`` and score it against its labels (partial labels respected), after the
    clean-up ``rtseg predict`` would apply with the same options."""
    bundle = predictor.bundle
    if bundle.n_classes != dataset.N_CLASSES:
        raise ConfigError(f"DATASET.N_CLASSES is {dataset.N_CLASSES} but checkpoint "
                          f"{predictor.loaded_model.source} predicts {bundle.n_classes} classes")
    names = list(bundle.class_names)
    refs = list_cases(dataset, split)
    known = load_partial_labels(dataset.PARTIAL_LABELS, [r.case_id for r in refs], names) if dataset.PARTIAL_LABELS else {}
    cm = ConfusionMatrix(len(names), predictor.device)
    rows: list[dict[str, Any]] = []
    for ref in tqdm(refs, desc=split, unit="case"):
        ct, gt = load_case(ref, dataset.N_CLASSES)
        pred = predictor.predict(ct)
        if largest_component or fill_holes:
            pred = pred.with_array(postprocess(pred.array, largest_component, fill_holes))
        present = set(known[ref.case_id]) if ref.case_id in known else None
        known_mask = None
        if present is not None:
            known_mask = torch.zeros(len(names), dtype=torch.bool)
            known_mask[sorted(present)] = True
        cm.update(torch.from_numpy(pred.array.astype(np.int64)), torch.from_numpy(gt.array.astype(np.int64)), known_mask)
        rows += case_metrics(pred.array, gt.array, ct.spacing, names, classes_present=present, case_id=ref.case_id)
        if on_case is not None:
            on_case(ref, ct, gt, pred)
    return SplitScores(split, [r.case_id for r in refs], rows, cm.compute(names))


def evaluate_split(cfg: Config, checkpoint: str | Path, split: str, out_dir: Path, device: torch.device,
                   overlap: float = 0.5, tta: bool = False, largest_component: bool = False,
                   fill_holes: bool = False, precision: str = "auto") -> dict[str, Any]:
    """``<split>_metrics.json`` (the original code base's metrics) and ``<split>_per_case.csv`` (``rtseg evaluate``'s format)."""
    predictor = Predictor(load_model(checkpoint, device), device, overlap=overlap, tta=tta, amp=cfg.TRAINING.AMP,
                          precision=precision)
    scores = predict_and_score(predictor, cfg.DATASET, split, largest_component=largest_component, fill_holes=fill_holes)
    result: dict[str, Any] = {"split": split, "checkpoint": str(checkpoint), "n_cases": len(scores.cases),
                              "precision": predictor.precision,
                              "largest_component": largest_component, "fill_holes": fill_holes, **scores.confusion}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir / f"{split}_metrics.json")
    if scores.rows:
        result["per_case_csv"] = str(write_long_csv(scores.rows, out_dir / f"{split}_per_case.csv"))
    return result


def format_metrics_table(result: dict[str, Any]) -> str:
    lines = [f"{'metric':<24}{'value':>10}"]
    for k in ("overall_acc", "mean_acc", "freqw_iou", "mean_dice"):
        lines.append(f"{k:<24}{result[k]:>10.4f}")
    for name, v in result["dice"].items():
        lines.append(f"{'dice ' + name:<24}{v:>10.4f}")
    return "\n".join(lines)
