"""``rtseg compare-models``: is the new model better than the current one, organ by organ, on held-out approved cases?

Both models contour every case of dataset splits (an exported dataset of approved cases, by default its
``val,test`` splits, which fine-tuning did not train on; ``all``: every case); per case and organ the surface Dice at 2 mm (and the Dice) against
the approved contours; organs a case's approved set does not hold (dataset.json's per-case organ list)
are skipped. Per organ a paired two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) on B - A:
"B better" where the median difference is positive and p < alpha, "A better" where negative and
p < alpha, else "no difference shown" (with fewer than 6 cases no difference can reach p < 0.05).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from rtseg.errors import DataError
from rtseg.evaluation.surface import organ_metrics
from rtseg.io.atomic import atomic_path
from rtseg.io.layouts.dataset_json import read_dataset_json
from rtseg.io.naming import ct_file, labels_file
from rtseg.io.nifti import read_nifti
from rtseg.io.rtstruct.roi_names import roi_key

DATASET_JSON = "rtseg_dataset.json"
MEASURES = ("surface_dice_2mm", "dice")


@dataclass(frozen=True)
class OrganVerdict:
    organ: str
    n: int
    median_a: float
    median_b: float
    median_diff: float
    p_value: float
    verdict: str

    def text(self) -> str:
        return (f"{self.organ}: {self.verdict} (n={self.n}, median surface Dice 2 mm A {self.median_a:.3f}, "
                f"B {self.median_b:.3f}, median B-A {self.median_diff:+.3f}, Wilcoxon p={self.p_value:.3g})")


def _cases(data: Path, split: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
    table = read_dataset_json(data / DATASET_JSON)
    splits = table.get("splits", {})
    if split == "all":
        cases = sorted(table.get("cases", {}))
    else:
        unknown = [s for s in split.split(",") if s not in splits]
        if unknown:
            raise DataError(f"{data / DATASET_JSON}: no split {', '.join(unknown)} (splits: {', '.join(splits) or 'none'}; "
                            "or 'all')")
        cases = [c for s in split.split(",") for c in splits[s]]
    if not cases:
        raise DataError(f"{data / DATASET_JSON}: split {split!r} holds no case; use --split all or another split")
    return cases, table.get("cases", {}), list(table.get("class_names", []))


def verdict(a: Sequence[float], b: Sequence[float], alpha: float) -> tuple[float, str]:
    """(two-sided Wilcoxon p of b - a, the verdict)."""
    d = np.asarray(b, float) - np.asarray(a, float)
    if len(d) == 0 or not np.any(d != 0):
        return 1.0, "no difference shown"
    p = float(stats.wilcoxon(d).pvalue)
    med = float(np.median(d))
    if p < alpha and med != 0:
        return p, "B better" if med > 0 else "A better"
    return p, "no difference shown"


def score_cases(a: str | Path, b: str | Path, data: str | Path, split: str = "val,test",
                device: str = "cpu") -> list[dict[str, Any]]:
    """One row per case and organ: ``case, organ, surface_dice_2mm_a, _b, dice_a, dice_b``."""
    from rtseg.inference.ensemble import load_predictor

    root = Path(data)
    cases, contoured, classes = _cases(root, split)
    models = [load_predictor(m, device) for m in (a, b)]
    for m, name in zip(models, (a, b)):
        if [roi_key(c) for c in m.bundle.class_names] != [roi_key(c) for c in classes]:
            raise DataError(f"{name}: the model's classes {list(m.bundle.class_names)} are not the dataset's {classes}")
    rows = []
    for case in cases:
        ct, truth = read_nifti(root / ct_file(case)), read_nifti(root / labels_file(case))
        preds = [m.predict_labels(ct) for m in models]
        for label, organ in enumerate(classes[1:], start=1):
            if organ not in contoured.get(case, classes[1:]):
                continue
            gt = np.asarray(truth.array) == label
            row: dict[str, Any] = {"case": case, "organ": organ}
            for tag, pred in zip("ab", preds):
                m = organ_metrics(pred == label, gt, ct.spacing, tolerance_mm=2.0)
                row[f"surface_dice_2mm_{tag}"], row[f"dice_{tag}"] = m["surface_dice"], m["dice"]
            rows.append(row)
    return rows


def compare_models(a: str | Path, b: str | Path, data: str | Path, split: str = "val,test", device: str = "cpu",
                   alpha: float = 0.05, out: str | Path | None = None) -> tuple[list[OrganVerdict], list[dict[str, Any]]]:
    """Per-organ verdicts and the per-case rows; with ``out``: ``compare_models.csv`` (cases) and ``.json`` (verdicts)."""
    if not 0 < alpha < 1:
        raise DataError(f"--alpha {alpha}: expected a significance level between 0 and 1")
    rows = score_cases(a, b, data, split, device)
    verdicts = []
    for organ in dict.fromkeys(r["organ"] for r in rows):
        va = [r["surface_dice_2mm_a"] for r in rows if r["organ"] == organ]
        vb = [r["surface_dice_2mm_b"] for r in rows if r["organ"] == organ]
        p, word = verdict(va, vb, alpha)
        verdicts.append(OrganVerdict(organ, len(va), float(np.median(va)), float(np.median(vb)),
                                     float(np.median(np.subtract(vb, va))), p, word))
    if out is not None:
        o = Path(out)
        o.mkdir(parents=True, exist_ok=True)
        with atomic_path(o / "compare_models.csv") as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        with atomic_path(o / "compare_models.json") as tmp:
            tmp.write_text(json.dumps({"a": str(a), "b": str(b), "split": split, "alpha": alpha,
                                       "organs": [v.__dict__ for v in verdicts]}, indent=1), encoding="utf-8")
    return verdicts, rows
