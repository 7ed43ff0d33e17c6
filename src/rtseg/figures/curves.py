"""Training curves against the iteration: losses, validation metrics and the learning rate, each on its own axis.

Matplotlib is imported lazily and through its object API (``Figure`` + Agg canvas), so
importing rtseg never loads it and no global backend is switched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


LR_NAMES = ("lr", "learning_rate")


def _groups(series: dict[str, list[tuple[int, float]]]) -> list[tuple[dict[str, list[tuple[int, float]]], str]]:
    """(series, y label) per panel: losses, validation metrics (0..1 when they fit), the learning rate on its own."""
    lrs = {k: v for k, v in series.items() if k.lower() in LR_NAMES or k.lower().startswith("lr_")}
    losses = {k: v for k, v in series.items() if "loss" in k.lower() and k not in lrs}
    metrics = {k: v for k, v in series.items() if k not in losses and k not in lrs}
    return [(g, name) for g, name in ((losses, "loss"), (metrics, "validation metric"), (lrs, "learning rate")) if g]


def training_curves_figure(history: Mapping[str, Sequence[tuple[int, float]]], title: str | None = None) -> "Figure":
    """The figure of :func:`plot_training_curves`: one panel each for losses, validation metrics and the learning
    rate (its own axis: next to a Dice in 0..1 it would be a flat line at 0)."""
    series = {k: [(int(i), float(v)) for i, v in pts] for k, pts in history.items() if len(pts)}
    if not series:
        raise DataError("training history is empty: nothing to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = _groups(series)
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
        if ylabel == "validation metric" and np.all((vals >= 0) & (vals <= 1)):
            ax.set_ylim(0, 1)
        if ylabel == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_training_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike[str], title: str | None = None) -> Path:
    """PNG of training curves vs iteration: series named ``*loss*`` on the left, metrics (e.g. Dice) in the middle,
    the learning rate (``lr``) on its own axis on the right."""
    fig = training_curves_figure(history, title)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
