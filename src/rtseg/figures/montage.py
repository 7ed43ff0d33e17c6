"""PNG montages: one row per slice, columns CT | ground truth | prediction, full-precision RGB."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from rtseg.errors import ConfigError
from rtseg.figures.overlay import (DEFAULT_WINDOW, HEADER_PX, PANEL_NAMES, RGB, draw_text, labelled_slices, overlay,
                                   pixel_repeats, prepare_inputs, upsample, view_slice, window_to_unit)
from rtseg.io.atomic import atomic_path


def montage_slices(labels: np.ndarray, pred: np.ndarray | None, axis: int, n_slices: int) -> list[int]:
    """Evenly spaced slices among those containing an organ (GT or prediction), else over the volume."""
    if n_slices < 1:
        raise ConfigError(f"number of montage slices must be >= 1, got {n_slices}")
    cand = labelled_slices([labels, pred], axis)
    if cand.size == 0:
        cand = np.arange(labels.shape[axis])
    pick = np.unique(np.rint(np.linspace(0, cand.size - 1, min(n_slices, cand.size))).astype(int))
    return [int(i) for i in cand[pick]]


def _title(im: "object", rows: list[tuple[int, np.ndarray]], width: int, n_panels: int, panel_names: Sequence[str]) -> None:
    """Column names in the header strip, the slice index at the top left of each row."""
    pw = width // n_panels
    for i, name in enumerate(list(panel_names)[:n_panels]):
        draw_text(im, (2 + i * pw, 1), name, (255, 255, 255))
    row_h = rows[0][1].shape[0]
    for r, (k, _) in enumerate(rows):
        draw_text(im, (2, HEADER_PX + r * row_h + 2), f"slice {k}", (255, 255, 0))


def save_montage(
    ct: np.ndarray,
    labels: np.ndarray,
    pred: np.ndarray | None,
    path: str | os.PathLike[str],
    colors: Sequence[RGB],
    n_slices: int = 6,
    axis: int = 2,
    window: tuple[float, float] = DEFAULT_WINDOW,
    alpha: float = 0.5,
    spacing: Sequence[float] | None = None,
    zoom: int = 3,
    titles: bool = True,
    panel_names: Sequence[str] = PANEL_NAMES,
) -> Path:
    """PNG grid: one row per slice, columns CT | ground truth | prediction (no prediction column if None).

    ``panel_names`` titles the columns, e.g. ("CT", "Prediction") when ``labels`` is a prediction.
    """
    from PIL import Image

    ct, labels, pred = prepare_inputs(ct, labels, pred, colors, axis, window, alpha, zoom)
    reps = pixel_repeats(spacing, axis, zoom)
    rows = []
    for k in montage_slices(labels, pred, axis, n_slices):
        grey = np.rint(window_to_unit(view_slice(ct, axis, k), window) * 255).astype(np.uint8)
        panels = [np.repeat(grey[..., None], 3, axis=-1)]
        for lab in (labels, pred):
            if lab is not None:
                panels.append(overlay(grey, view_slice(lab, axis, k), colors, alpha))
        rows.append((k, upsample(np.concatenate(panels, axis=1), reps)))
    grid = np.concatenate([r for _, r in rows], axis=0)
    if titles:
        grid = np.concatenate([np.zeros((HEADER_PX, grid.shape[1], 3), np.uint8), grid], axis=0)
    im = Image.fromarray(np.ascontiguousarray(grid))
    if titles:
        _title(im, rows, grid.shape[1], 2 if pred is None else 3, panel_names)
    target = Path(path)
    with atomic_path(target) as tmp:
        im.save(tmp, format="PNG")
    return target
