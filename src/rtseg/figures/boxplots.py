"""Box plots of per-case metrics, one PNG per metric with one box per organ.

Matplotlib is imported lazily and through its object API (``Figure`` + Agg canvas), so
importing rtseg never loads it and no global backend is switched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.io.atomic import atomic_path

_TITLES = {
    "dice": "Dice",
    "iou": "IoU (Jaccard)",
    "hd": "Hausdorff distance (mm)",
    "hd95": "95th-percentile Hausdorff distance (mm)",
    "assd": "Average symmetric surface distance (mm)",
    "avg_hd": "Average Hausdorff distance (mm)",
    "surface_dice": "Surface Dice",
    "rvd": "Relative volume difference (V_pred - V_gt) / V_gt",
    "vol_pred_ml": "Predicted volume (ml)",
    "vol_gt_ml": "Ground-truth volume (ml)",
}


def plot_name(metric: str) -> str:
    return f"boxplot_{metric}.png"


def write_box_plots(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    metrics: Sequence[str],
    tolerance_mm: float | None = None,
) -> list[Path]:
    """Write ``boxplot_<metric>.png`` per metric; non-finite values are counted under each box, not drawn.

    ``rows`` are per-case, per-organ metric rows (keys ``organ`` and each of ``metrics``), as
    :func:`rtseg.evaluation.surface.case_metrics` returns them.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    organs = list(dict.fromkeys(str(r["organ"]) for r in rows))
    out = Path(out_dir)
    written: list[Path] = []
    for metric in metrics:
        data, labels = [], []
        for organ in organs:
            vals = np.asarray([float(r[metric]) for r in rows if r["organ"] == organ], dtype=np.float64)
            ok = vals[np.isfinite(vals)]
            data.append(ok)
            bad = vals.size - ok.size
            labels.append(f"{organ}\nn={ok.size}" + (f", {bad} non-finite" if bad else ""))
        fig = Figure(figsize=(max(4.0, 1.4 * len(organs) + 1.5), 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if organs:
            ax.boxplot(data, showmeans=True)
            ax.set_xticks(range(1, len(organs) + 1), labels, fontsize=8)
        title = _TITLES.get(metric, metric)
        if metric == "surface_dice" and tolerance_mm is not None:
            title += f" at {tolerance_mm:g} mm"
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        target = out / plot_name(metric)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png")
        written.append(target)
    return written
