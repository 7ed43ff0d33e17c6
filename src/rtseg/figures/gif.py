"""Animated GIFs stepping through the slices: CT | ground truth | prediction.

GIFs use one global palette built from (grey level, label) pairs, so colours are exact
and identical in every frame: an organ pixel is ``round((1 - alpha) * grey + alpha * colour)``
with ``grey`` the CT quantised to the palette's grey levels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from rtseg.errors import ConfigError, DataError
from rtseg.figures.overlay import (DEFAULT_WINDOW, HEADER_PX, PANEL_NAMES, RGB, draw_text, labelled_slices, overlay,
                                   pixel_repeats, prepare_inputs, upsample, view_slice, window_to_unit)
from rtseg.io.atomic import atomic_path


def gif_palette(colors: Sequence[RGB], alpha: float) -> tuple[int, np.ndarray]:
    """Grey levels per label and the 256x3 palette: index = label * levels + grey level."""
    n = len(colors) + 1
    levels = min(64, 256 // n)
    if levels < 4:
        raise ConfigError(f"a GIF can show at most 64 labels, got {n - 1} colours")
    grey = np.rint(np.linspace(0, 255, levels)).astype(np.uint8)
    pal = np.zeros((256, 3), np.uint8)
    pal[:levels] = grey[:, None]
    for k in range(1, n):
        lab = np.full(levels, k)
        pal[k * levels : (k + 1) * levels] = overlay(grey[None, :], lab[None, :], colors, alpha)[0]
    return levels, pal


def slice_indices(labels: np.ndarray, pred: np.ndarray | None, axis: int, stride: int = 1, labelled_only: bool = False) -> list[int]:
    """Slices a GIF shows: every ``stride``-th, optionally only those with a label (GT or prediction)."""
    if stride < 1:
        raise ConfigError(f"slice stride must be >= 1, got {stride}")
    idx = labelled_slices([labels, pred], axis) if labelled_only else np.arange(labels.shape[axis])
    if labelled_only and idx.size == 0:
        raise DataError("no slice contains a label; show all slices instead")
    return [int(i) for i in idx[::stride]]


def _frame(
    ct: np.ndarray, labels: np.ndarray, pred: np.ndarray | None, k: int, axis: int, window: tuple[float, float],
    levels: int, pal: np.ndarray, n_lab: int, reps: tuple[int, int], titles: bool,
) -> "object":
    """One palette image: panels side by side, labels outside 1..n_lab shown as CT."""
    from PIL import Image

    q = np.rint(window_to_unit(view_slice(ct, axis, k), window) * (levels - 1)).astype(np.uint8)
    panels = [q]
    for lab in (labels, pred):
        if lab is None:
            continue
        v = view_slice(lab, axis, k).astype(np.int64)
        v = np.where((v >= 1) & (v <= n_lab), v, 0)
        panels.append((v * levels + q).astype(np.uint8))
    idx = upsample(np.concatenate(panels, axis=1), reps)
    if titles:
        idx = np.concatenate([np.zeros((HEADER_PX, idx.shape[1]), np.uint8), idx], axis=0)
    im = Image.frombytes("P", (idx.shape[1], idx.shape[0]), np.ascontiguousarray(idx).tobytes())
    im.putpalette(pal.ravel().tolist())
    if titles:
        pw = idx.shape[1] // len(panels)
        for i, name in enumerate(PANEL_NAMES[: len(panels)]):
            draw_text(im, (2 + i * pw, 1), f"{name} {k}" if i == 0 else name, levels - 1)
    return im


def save_gif(
    ct: np.ndarray,
    labels: np.ndarray,
    pred: np.ndarray | None,
    path: str | os.PathLike[str],
    colors: Sequence[RGB],
    axis: int = 2,
    window: tuple[float, float] = DEFAULT_WINDOW,
    stride: int = 1,
    duration_ms: int = 150,
    labelled_only: bool = False,
    alpha: float = 0.5,
    spacing: Sequence[float] | None = None,
    zoom: int = 3,
    titles: bool = True,
) -> Path:
    """Animated GIF stepping through slices along ``axis``: CT | ground truth | prediction.

    One frame per shown slice; frame width is exactly (2 or 3) x panel width, and with
    ``titles`` a ``HEADER_PX`` strip on top names the panels and the slice.
    """
    ct, labels, pred = prepare_inputs(ct, labels, pred, colors, axis, window, alpha, zoom)
    if duration_ms < 10:
        raise ConfigError(f"GIF frame duration must be >= 10 ms, got {duration_ms}")
    levels, pal = gif_palette(colors, alpha)
    reps = pixel_repeats(spacing, axis, zoom)
    frames = [_frame(ct, labels, pred, k, axis, window, levels, pal, len(colors), reps, titles)
              for k in slice_indices(labels, pred, axis, stride, labelled_only)]
    target = Path(path)
    with atomic_path(target) as tmp:
        frames[0].save(  # type: ignore[attr-defined]
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(duration_ms), loop=0, optimize=False, disposal=1
        )
    return target
