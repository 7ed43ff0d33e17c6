"""Figures for people: slice GIFs, PNG montages (CT | ground truth | prediction) and training curves.

The array functions take RAS+-ordered arrays (axis 0 increases towards the patient's
right, 1 towards anterior, 2 towards superior). A slice is shown as ``slice.T[::-1, ::-1]``:
rows follow the higher of the two in-plane axes and columns the lower, both reversed,
which gives the usual radiological display: axial with anterior up and the patient's
right on the viewer's left, coronal with superior up and right on the left, sagittal
with superior up and anterior on the left. :func:`save_volume_figure` reorients any
``Volume`` to RAS+ first.

GIFs use one global palette built from (grey level, label) pairs, so colours are exact
and identical in every frame: an organ pixel is ``round((1 - alpha) * grey + alpha * colour)``
with ``grey`` the CT quantised to the palette's grey levels. PNGs are full-precision RGB.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

import numpy as np

from rtseg.config.schema import IGNORE_INDEX
from rtseg.errors import ConfigError, DataError
from rtseg.io.atomic import atomic_path

if TYPE_CHECKING:
    from rtseg.io.volume import Volume

RGB = tuple[int, int, int]
PANEL_NAMES = ("CT", "Ground truth", "Prediction")
HEADER_PX = 14
DEFAULT_WINDOW: tuple[float, float] = (-160.0, 240.0)


# ----------------------------------------------------------------------------- helpers


def default_colors(n_classes: int) -> list[RGB]:
    """The seed's COLOR_MAP for the pelvic labels, extended the way DatasetConfig does."""
    from rtseg.config.schema import DatasetConfig

    return DatasetConfig(PATH=".", N_CLASSES=max(2, int(n_classes))).colors()


def parse_colors(text: str) -> list[RGB]:
    """Colours from a JSON list of [r, g, b] (inline, or a path to a .json file): one per label 1..N-1."""
    src = "--colors"
    raw = text
    if not text.lstrip().startswith("["):
        p = Path(text)
        if not p.is_file():
            raise ConfigError(f"--colors: {text!r} is neither a JSON list like [[255,0,0],[0,255,0]] nor an existing .json file")
        src, raw = str(p), p.read_text()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{src}: not valid JSON ({exc.msg} at line {exc.lineno}); expected a list of [r, g, b]") from None
    if isinstance(value, Mapping) and "COLOR_MAP" in value:
        value = value["COLOR_MAP"]
    ok = isinstance(value, list) and value and all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
        for c in value
    )
    if not ok:
        raise ConfigError(f"{src}: expected a non-empty list of [r, g, b] with integers 0..255, got {str(value)[:80]}")
    return [(int(c[0]), int(c[1]), int(c[2])) for c in value]


def view_slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice of a RAS-ordered array, oriented for viewing (see module docstring)."""
    return np.take(array, index, axis=axis).T[::-1, ::-1]


def _repeats(spacing: Sequence[float] | None, axis: int, zoom: int) -> tuple[int, int]:
    """Pixel repeats for (rows, cols) so that pixels are roughly square in millimetres."""
    a, b = [i for i in range(3) if i != axis]
    if spacing is None:
        return zoom, zoom
    sa, sb = float(spacing[a]), float(spacing[b])
    m = min(sa, sb)
    return max(1, round(zoom * sb / m)), max(1, round(zoom * sa / m))


def _upsample(img: np.ndarray, reps: tuple[int, int]) -> np.ndarray:
    return np.repeat(np.repeat(img, reps[0], axis=0), reps[1], axis=1)


def window_to_unit(ct: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU -> [0, 1] within the display window."""
    lo, hi = window
    return np.clip((np.asarray(ct, np.float32) - lo) / (hi - lo), 0.0, 1.0)


def overlay(grey: np.ndarray, labels: np.ndarray, colors: Sequence[RGB], alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image: ``grey`` (uint8) with each label k >= 1 blended towards ``colors[k-1]``."""
    g = grey.astype(np.float32)
    rgb = np.repeat(g[..., None], 3, axis=-1)
    table = np.asarray(colors, np.float32).reshape(-1, 3)
    lab = labels.astype(np.int64)
    m = (lab > 0) & (lab <= len(table))
    rgb[m] = (1.0 - alpha) * g[m][:, None] + alpha * table[lab[m] - 1]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _check_inputs(
    ct: np.ndarray, labels: np.ndarray, pred: np.ndarray | None, colors: Sequence[RGB], axis: int, window: tuple[float, float], alpha: float
) -> None:
    if ct.ndim != 3:
        raise DataError(f"CT must be a 3D array, got shape {ct.shape}")
    if labels.shape != ct.shape:
        raise DataError(f"labels shape {labels.shape} differs from CT shape {ct.shape}")
    if pred is not None and pred.shape != ct.shape:
        raise DataError(f"prediction shape {pred.shape} differs from CT shape {ct.shape}")
    if axis not in (0, 1, 2):
        raise ConfigError(f"slice axis must be 0, 1 or 2, got {axis}")
    if not window[0] < window[1]:
        raise ConfigError(f"display window must be (low, high) with low < high, got {list(window)}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"overlay alpha must be in [0, 1], got {alpha}")
    for name, lab in (("labels", labels), ("prediction", pred)):
        if lab is None:
            continue
        vals = np.unique(lab)
        bad = [int(v) for v in vals if v != IGNORE_INDEX and not 0 <= v <= len(colors)]
        if bad:
            raise DataError(f"{name} contain label {bad[0]} but only {len(colors)} colours (labels 1..{len(colors)}) were given")


def _labelled_slices(arrays: Sequence[np.ndarray | None], axis: int) -> np.ndarray:
    mask = np.zeros(arrays[0].shape[axis], bool)  # type: ignore[union-attr]
    other = tuple(i for i in range(3) if i != axis)
    for a in arrays:
        if a is not None:
            mask |= ((a > 0) & (a != IGNORE_INDEX)).any(axis=other)
    return np.flatnonzero(mask)


def slice_indices(labels: np.ndarray, pred: np.ndarray | None, axis: int, stride: int = 1, labelled_only: bool = False) -> list[int]:
    """Slices a GIF shows: every ``stride``-th, optionally only those with a label (GT or prediction)."""
    if stride < 1:
        raise ConfigError(f"slice stride must be >= 1, got {stride}")
    idx = _labelled_slices([labels, pred], axis) if labelled_only else np.arange(labels.shape[axis])
    if labelled_only and idx.size == 0:
        raise DataError("no slice contains a label; show all slices instead")
    return [int(i) for i in idx[::stride]]


def _draw_text(img: "object", xy: tuple[int, int], text: str, fill: int | RGB) -> None:
    from PIL import ImageDraw

    ImageDraw.Draw(img).text(xy, text, fill=fill)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- GIF


def _palette(colors: Sequence[RGB], alpha: float) -> tuple[int, np.ndarray]:
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
    from PIL import Image

    ct, labels = np.asarray(ct), np.asarray(labels)
    pred = None if pred is None else np.asarray(pred)
    _check_inputs(ct, labels, pred, colors, axis, window, alpha)
    if duration_ms < 10:
        raise ConfigError(f"GIF frame duration must be >= 10 ms, got {duration_ms}")
    if zoom < 1:
        raise ConfigError(f"zoom must be >= 1, got {zoom}")
    levels, pal = _palette(colors, alpha)
    reps = _repeats(spacing, axis, zoom)
    shown = slice_indices(labels, pred, axis, stride, labelled_only)
    n_lab = len(colors)
    frames = []
    for k in shown:
        q = np.rint(window_to_unit(view_slice(ct, axis, k), window) * (levels - 1)).astype(np.uint8)
        panels = [q]
        for lab in (labels, pred):
            if lab is None:
                continue
            v = view_slice(lab, axis, k).astype(np.int64)
            v = np.where((v >= 1) & (v <= n_lab), v, 0)
            panels.append((v * levels + q).astype(np.uint8))
        idx = _upsample(np.concatenate(panels, axis=1), reps)
        if titles:
            idx = np.concatenate([np.zeros((HEADER_PX, idx.shape[1]), np.uint8), idx], axis=0)
        im = Image.frombytes("P", (idx.shape[1], idx.shape[0]), np.ascontiguousarray(idx).tobytes())
        im.putpalette(pal.ravel().tolist())
        if titles:
            pw = idx.shape[1] // len(panels)
            for i, name in enumerate(PANEL_NAMES[: len(panels)]):
                _draw_text(im, (2 + i * pw, 1), f"{name} {k}" if i == 0 else name, levels - 1)
        frames.append(im)
    target = Path(path)
    with atomic_path(target) as tmp:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(duration_ms), loop=0, optimize=False, disposal=1
        )
    return target


# ----------------------------------------------------------------------------- PNG montage


def montage_slices(labels: np.ndarray, pred: np.ndarray | None, axis: int, n_slices: int) -> list[int]:
    """Evenly spaced slices among those containing an organ (GT or prediction), else over the volume."""
    if n_slices < 1:
        raise ConfigError(f"number of montage slices must be >= 1, got {n_slices}")
    cand = _labelled_slices([labels, pred], axis)
    if cand.size == 0:
        cand = np.arange(labels.shape[axis])
    pick = np.unique(np.rint(np.linspace(0, cand.size - 1, min(n_slices, cand.size))).astype(int))
    return [int(i) for i in cand[pick]]


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

    ct, labels = np.asarray(ct), np.asarray(labels)
    pred = None if pred is None else np.asarray(pred)
    _check_inputs(ct, labels, pred, colors, axis, window, alpha)
    if zoom < 1:
        raise ConfigError(f"zoom must be >= 1, got {zoom}")
    reps = _repeats(spacing, axis, zoom)
    rows = []
    for k in montage_slices(labels, pred, axis, n_slices):
        grey = np.rint(window_to_unit(view_slice(ct, axis, k), window) * 255).astype(np.uint8)
        panels = [np.repeat(grey[..., None], 3, axis=-1)]
        for lab in (labels, pred):
            if lab is not None:
                panels.append(overlay(grey, view_slice(lab, axis, k), colors, alpha))
        rows.append((k, _upsample(np.concatenate(panels, axis=1), reps)))
    grid = np.concatenate([r for _, r in rows], axis=0)
    n_panels = 2 if pred is None else 3
    if titles:
        grid = np.concatenate([np.zeros((HEADER_PX, grid.shape[1], 3), np.uint8), grid], axis=0)
    im = Image.fromarray(np.ascontiguousarray(grid))
    if titles:
        pw = grid.shape[1] // n_panels
        for i, name in enumerate(list(panel_names)[:n_panels]):
            _draw_text(im, (2 + i * pw, 1), name, (255, 255, 255))
        row_h = rows[0][1].shape[0]
        for r, (k, _) in enumerate(rows):
            _draw_text(im, (2, HEADER_PX + r * row_h + 2), f"slice {k}", (255, 255, 0))
    target = Path(path)
    with atomic_path(target) as tmp:
        im.save(tmp, format="PNG")
    return target


# ----------------------------------------------------------------------------- training curves


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


# ----------------------------------------------------------------------------- Volumes


def _describe(v: "Volume", fallback: str) -> str:
    return str(v.meta.get("source", fallback))


def _grid_text(v: "Volume") -> str:
    sp = ", ".join(f"{s:.3g}" for s in v.spacing)
    org = ", ".join(f"{o:.1f}" for o in v.origin)
    return f"shape {list(v.shape)}, spacing ({sp}) mm, origin ({org})"


def save_volume_figure(
    ct: "Volume",
    labels: "Volume",
    pred: "Volume | None",
    path: str | os.PathLike[str],
    colors: Sequence[RGB] | None = None,
    kind: Literal["gif", "png"] | None = None,
    **options: object,
) -> Path:
    """GIF (``.gif``) or montage (``.png``) from Volumes: grids must match; arrays are shown in RAS order."""
    from rtseg.data.orientation import to_canonical

    for other, what in ((labels, "labels"), (pred, "prediction")):
        if other is not None and not ct.same_grid(other):
            raise DataError(
                f"{_describe(other, what)} ({_grid_text(other)}) is not on the grid of {_describe(ct, 'CT')} ({_grid_text(ct)}); "
                "resample it onto the CT grid first"
            )
    target = Path(path)
    fmt = kind or target.suffix.lower().lstrip(".")
    if fmt not in ("gif", "png"):
        raise ConfigError(f"{target}: output must end in .gif (animated slices) or .png (montage)")
    lab_arrays = []
    for v, what in ((labels, "labels"), (pred, "prediction")):
        if v is None:
            lab_arrays.append(None)
            continue
        a = np.asarray(v.array)
        if not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.isfinite(a)) or np.any(a != np.rint(a)):
                raise DataError(f"{_describe(v, what)}: labels must be whole numbers, found non-integer values")
        if a.min() < 0:
            raise DataError(f"{_describe(v, what)}: labels must be >= 0, found {int(a.min())}")
        lab_arrays.append(to_canonical(v.with_array(a.astype(np.int64)))[0].array)
    ct_c = to_canonical(ct)[0]
    if colors is None:
        top = max(int(a[a != IGNORE_INDEX].max(initial=0)) for a in lab_arrays if a is not None)
        colors = default_colors(top + 1)
    if fmt == "gif":
        return save_gif(ct_c.array, lab_arrays[0], lab_arrays[1], target, colors, spacing=ct_c.spacing, **options)  # type: ignore[arg-type]
    return save_montage(ct_c.array, lab_arrays[0], lab_arrays[1], target, colors, spacing=ct_c.spacing, **options)  # type: ignore[arg-type]
