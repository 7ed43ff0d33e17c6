"""Training curves: losses on the left, validation metrics on the right, against the iteration.

Matplotlib is imported lazily and through its object API (``Figure`` + Agg canvas), so
importing rtseg never loads it and no global backend is switched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path


def plot_training_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike[str], title: str | None = None) -> Path:
    """PNG of training curves vs iteration: series named ``*loss*`` on the left, metrics (e.g. Dice) on the right."""
    series = {k: [(int(i), float(v)) for i, v in pts] for k, pts in history.items() if len(pts)}
    if not series:
        raise DataError("training history is empty: nothing to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = {k: v for k, v in series.items() if "loss" in k.lower()}
    metrics = {k: v for k, v in series.items() if k not in losses}
    groups = [(g, name) for g, name in ((losses, "loss"), (metrics, "validation metric")) if g]
    fig = Figure(figsize=(5.0 * len(groups), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for j, (group, ylabel) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), j + 1)
        for name, pts in group.items():
            it, val = zip(*pts)
            ax.plot(it, val, marker="o" if len(pts) < 30 else None, markersize=3, label=name)
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        vals = np.concatenate([np.asarray([v for _, v in pts]) for pts in group.values()])
        if group is metrics and np.all((vals >= 0) & (vals <= 1)):
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
