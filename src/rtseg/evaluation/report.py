"""Evaluate a folder of predictions against a folder of ground truths and report the results.

Outputs (all written atomically, and only after every case was evaluated, so a failure
leaves no partial report): ``metrics.csv`` (long format: case, organ, metric, value),
``summary.json`` (per organ and metric: mean, median, std, n, n_nonfinite), ``report.md``
(per-organ mean ± std) and ``boxplot_<metric>.png``.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from rtseg.errors import DataError
from rtseg.evaluation.surface import FLAG_KEYS, REGISTERED, case_metrics, labels_present, metric_keys
from rtseg.io.atomic import atomic_path
from rtseg.io.naming import LABEL_SUFFIXES, label_case_id, unpaired
from rtseg.io.nifti import read_nifti

CSV_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.md"

#: Human-readable column titles with units.
METRIC_TITLES: dict[str, str] = {
    "dice": "Dice",
    "iou": "IoU",
    "hd": "HD (mm)",
    "hd95": "HD95 (mm)",
    "assd": "ASSD (mm)",
    "avg_hd": "AvgHD (mm)",
    "surface_dice": "Surface Dice",
    "rvd": "RVD",
    "vol_pred_ml": "Vol pred (ml)",
    "vol_gt_ml": "Vol GT (ml)",
}
TABLE_METRICS: tuple[str, ...] = ("dice", "iou", "hd", "hd95", "assd", "avg_hd", "surface_dice", "rvd")


def _index_folder(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: {what} folder not found")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):  # hidden: e.g. an interrupted atomic write's .<name>.XXXX.tmp.nii.gz
            continue
        cid = label_case_id(p) if p.is_file() else None  # images beside the labels are skipped
        if cid is None:
            continue
        if cid in found:
            raise DataError(f"{folder}: two {what} files for one case: {found[cid].name} and {p.name}")
        found[cid] = p
    if not found:
        raise DataError(f"{folder}: no NIfTI label files (*.nii.gz, *.nii) in the {what} folder")
    return found


def pair_files(pred_dir: str | os.PathLike[str], gt_dir: str | os.PathLike[str]) -> list[tuple[str, Path, Path]]:
    """``(case id, prediction, ground truth)`` sorted by id; every file must have a partner."""
    pred = _index_folder(Path(pred_dir), "prediction")
    gt = _index_folder(Path(gt_dir), "ground-truth")
    missing = unpaired((f"predictions without ground truth in {pred_dir}", [pred[c].name for c in pred.keys() - gt.keys()]),
                       (f"ground truths without prediction in {gt_dir}", [gt[c].name for c in gt.keys() - pred.keys()]))
    if missing:
        raise DataError("unpaired files (case id = file name minus " + "/".join(LABEL_SUFFIXES) + "): " + missing)
    return [(c, pred[c], gt[c]) for c in sorted(pred)]


def _finite_stats(values: Sequence[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    ok = arr[np.isfinite(arr)]
    n = int(ok.size)
    return {
        "mean": float(ok.mean()) if n else None,
        "median": float(np.median(ok)) if n else None,
        "std": float(ok.std(ddof=1)) if n > 1 else None,
        "n": n,
        "n_nonfinite": int(arr.size - n),
    }


def summarize(rows: Sequence[Mapping[str, Any]], tolerance_mm: float, n_cases: int | None = None) -> dict[str, Any]:
    """Per organ and metric statistics over finite values; infinities/NaNs are counted, never averaged."""
    organs: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        organs.setdefault(str(r["organ"]), []).append(r)
    out: dict[str, Any] = {
        "tolerance_mm": float(tolerance_mm),
        "n_cases": len({r.get("case") for r in rows}) if n_cases is None else int(n_cases),
        "statistics": "mean/median/std (sample, ddof=1) over finite values; n_nonfinite counts inf/NaN excluded",
        "organs": {},
    }
    for organ, rs in organs.items():
        empty_gt = [bool(r["empty_gt"]) for r in rs]
        empty_pred = [bool(r["empty_pred"]) for r in rs]
        out["organs"][organ] = {
            "n_cases": len(rs),
            "n_empty_gt": int(sum(empty_gt)),
            "n_empty_pred": int(sum(empty_pred)),
            "n_both_empty": int(sum(a and b for a, b in zip(empty_gt, empty_pred))),
            "metrics": {m: _finite_stats([float(r[m]) for r in rs]) for m in metric_keys()},
        }
    return out


def _value_text(v: float) -> str:
    return repr(float(v))  # full precision; 'inf' / 'nan' are read back by csv/pandas/numpy


def write_long_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["case", "organ", "metric", "value"])
            for r in rows:
                for m in metric_keys() + FLAG_KEYS:
                    w.writerow([r.get("case", ""), r["organ"], m, _value_text(r[m])])
    return target


def write_summary_json(summary: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    text = json.dumps(summary, indent=2, allow_nan=False)  # a NaN/inf here would be a bug
    with atomic_path(target) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return target


def _cell(stats: Mapping[str, Any], metric: str) -> str:
    if stats["mean"] is None:
        text = "n/a"
    else:
        digits = 3 if metric in ("dice", "iou", "surface_dice", "rvd") else 2
        std = "" if stats["std"] is None else f"±{stats['std']:.{digits}f}"
        text = f"{stats['mean']:.{digits}f}{std}"
    return text + ("*" if stats["n_nonfinite"] else "")


def _table(summary: Mapping[str, Any], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    header = ["organ", "n"] + [METRIC_TITLES.get(m, REGISTERED[m].title if m in REGISTERED else m) for m in metrics]
    body = [
        [organ, str(o["n_cases"])] + [_cell(o["metrics"][m], m) for m in metrics]
        for organ, o in summary["organs"].items()
    ]
    return header, body


def _footnote(summary: Mapping[str, Any]) -> str:
    nonfinite = sum(s["n_nonfinite"] for o in summary["organs"].values() for s in o["metrics"].values())
    notes = [f"mean±std over finite values; surface Dice at {summary['tolerance_mm']:g} mm"]
    if nonfinite:
        notes.append("* some values are infinite (prediction or ground truth empty) and are counted, not averaged")
    return "; ".join(notes)


def format_table(summary: Mapping[str, Any], metrics: Sequence[str] | None = None) -> str:
    """Plain-text table with aligned columns, for the terminal (default: TABLE_METRICS and the registered ones)."""
    header, body = _table(summary, TABLE_METRICS + tuple(REGISTERED) if metrics is None else metrics)
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in [header] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [_footnote(summary)])


def write_markdown_report(summary: Mapping[str, Any], path: str | os.PathLike[str], plots: Sequence[Path] = ()) -> Path:
    header, body = _table(summary, metric_keys())
    lines = [
        "# Segmentation evaluation",
        "",
        f"{summary['n_cases']} cases. Definitions and empty-mask conventions: docs/METRICS.md in the rtseg repository.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    lines += ["", _footnote(summary) + ".", "", "## Empty masks", "", "| organ | empty GT | empty prediction | both empty |", "|---|---:|---:|---:|"]
    lines += [
        f"| {organ} | {o['n_empty_gt']} | {o['n_empty_pred']} | {o['n_both_empty']} |" for organ, o in summary["organs"].items()
    ]
    if plots:
        lines += ["", "## Distributions", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def evaluate_folders(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    class_names: Sequence[str] | None,
    out_dir: str | os.PathLike[str] | None,
    tolerance_mm: float = 2.0,
    *,
    classes_present: Mapping[str, Iterable[int]] | None = None,
    skip_absent: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Evaluate every paired case; write the reports to ``out_dir`` (if given); return the summary.

    ``class_names`` is indexed by label value with background first (as
    ``DatasetConfig.class_names()``); ``None`` names labels ``class_<i>`` and evaluates only
    labels present in a case. ``classes_present`` maps case id -> contoured labels;
    ``skip_absent`` treats organs missing from a ground truth as not contoured (OpenKBP).
    """
    if not math.isfinite(float(tolerance_mm)) or float(tolerance_mm) < 0:
        raise DataError(f"tolerance must be a finite number >= 0 mm, got {tolerance_mm}")
    pairs = pair_files(pred_dir, gt_dir)
    rows: list[dict[str, Any]] = []
    for cid, p_path, g_path in tqdm(pairs, desc="evaluate", unit="case", disable=None):
        pred = read_nifti(p_path)
        gt = read_nifti(g_path)
        if pred.shape != gt.shape:
            raise DataError(f"{p_path}: grid {pred.shape} differs from ground truth {g_path.name} {gt.shape}; resample first")
        if not pred.same_grid(gt):
            diff = float(np.abs(pred.affine - gt.affine).max())
            raise DataError(
                f"{p_path}: affine differs from ground truth {g_path.name} (max difference {diff:.4g}); resample first"
            )
        present: set[int] | None = None
        if classes_present is not None and cid in classes_present:
            present = {int(c) for c in classes_present[cid]}
        try:
            if skip_absent:
                in_gt = labels_present(gt.array)
                present = in_gt if present is None else present & in_gt
            names = class_names
            if names is None:
                found = labels_present(gt.array) | labels_present(pred.array)
                names = ["background"] + [f"class_{i}" for i in range(1, max(found, default=1) + 1)]
                present = found if present is None else present & found
            rows += case_metrics(pred.array, gt.array, gt.spacing, names, tolerance_mm, present, case_id=cid)
        except DataError as exc:
            raise DataError(f"{g_path} / {p_path.name}: {exc}") from None
    summary = summarize(rows, tolerance_mm, n_cases=len(pairs))
    summary["cases"] = [cid for cid, _, _ in pairs]
    if out_dir is not None:
        out = Path(out_dir)
        written: list[Path] = []
        if plots:
            from rtseg.figures.boxplots import write_box_plots

            written = write_box_plots(rows, out, metric_keys(), tolerance_mm=tolerance_mm)
        write_long_csv(rows, out / CSV_NAME)
        write_summary_json(summary, out / SUMMARY_NAME)
        write_markdown_report(summary, out / REPORT_NAME, written)
    return summary
