"""``rtseg val`` / ``rtseg test``: predict a split with a checkpoint on the original grids and score it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rtseg.config.schema import Config
from rtseg.data.datasets import list_cases, load_case, load_partial_labels
from rtseg.errors import ConfigError
from rtseg.evaluation.confusion import ConfusionMatrix
from rtseg.evaluation.surface import case_metrics
from rtseg.io.atomic import atomic_path
from rtseg.io.jsonfile import write_json
from rtseg.inference.predictor import Predictor, load_model

log = logging.getLogger("rtseg")


def evaluate_split(cfg: Config, checkpoint: str | Path, split: str, out_dir: Path, device: torch.device,
                   overlap: float = 0.5, tta: bool = False) -> dict[str, Any]:
    d = cfg.DATASET
    loaded = load_model(checkpoint, device)
    if loaded.bundle.n_classes != d.N_CLASSES:
        raise ConfigError(f"DATASET.N_CLASSES is {d.N_CLASSES} but checkpoint {checkpoint} predicts {loaded.bundle.n_classes} classes")
    names = list(loaded.bundle.class_names)
    refs = list_cases(d.NAME, d.PATH, split, d.TRAIN_SPLIT, d.VAL_SPLIT, d.SPLITS)
    known = load_partial_labels(d.PARTIAL_LABELS, [r.case_id for r in refs], names) if d.PARTIAL_LABELS else {}
    predictor = Predictor(loaded, device, overlap=overlap, tta=tta, amp=cfg.TRAINING.AMP)
    cm = ConfusionMatrix(len(names), device)
    rows: list[dict[str, Any]] = []
    for ref in tqdm(refs, desc=f"{split}", unit="case"):
        img, lab = load_case(ref, d.N_CLASSES)
        pred = predictor.predict(img)
        kmask = None
        present = None
        if ref.case_id in known:
            kmask = torch.zeros(len(names), dtype=torch.bool)
            kmask[known[ref.case_id]] = True
            present = set(known[ref.case_id])
        cm.update(torch.from_numpy(pred.array.astype(np.int64)), torch.from_numpy(lab.array.astype(np.int64)), kmask)
        for row in case_metrics(pred.array, lab.array, img.spacing, names, classes_present=present):
            rows.append({"case": ref.case_id, **row})
    metrics = cm.compute(names)
    result: dict[str, Any] = {"split": split, "checkpoint": str(checkpoint), "n_cases": len(refs), **metrics}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir / f"{split}_metrics.json")
    if rows:
        import csv

        keys = list(rows[0].keys())
        with atomic_path(out_dir / f"{split}_per_case.csv") as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=keys)
                w.writeheader()
                w.writerows(rows)
        result["per_case_csv"] = str(out_dir / f"{split}_per_case.csv")
    return result


def format_metrics_table(result: dict[str, Any]) -> str:
    lines = [f"{'metric':<24}{'value':>10}"]
    for k in ("overall_acc", "mean_acc", "freqw_iou", "mean_dice"):
        lines.append(f"{k:<24}{result[k]:>10.4f}")
    for name, v in result["dice"].items():
        lines.append(f"{'dice ' + name:<24}{v:>10.4f}")
    return "\n".join(lines)
