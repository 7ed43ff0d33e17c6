"""What every figure shares: slice orientation, HU windowing, colour overlay, input checks and titles.

The array functions take RAS+-ordered arrays (axis 0 increases towards the patient's
right, 1 towards anterior, 2 towards superior). A slice is shown as ``slice.T[::-1, ::-1]``:
rows follow the higher of the two in-plane axes and columns the lower, both reversed,
which gives the usual radiological display: axial with anterior up and the patient's
right on the viewer's left, coronal with superior up and right on the left, sagittal
with superior up and anterior on the left.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from rtseg.errors import ConfigError, DataError
from rtseg.labels import IGNORE_INDEX, RGB
from rtseg.labels import default_colors as _label_colors

PANEL_NAMES = ("CT", "Ground truth", "Prediction")
HEADER_PX = 14
DEFAULT_WINDOW: tuple[float, float] = (-160.0, 240.0)


def default_colors(n_classes: int) -> list[RGB]:
    """The original code base's COLOR_MAP for the pelvic labels, extended as for any dataset (at least one organ)."""
    return _label_colors(max(2, int(n_classes)))


def view_slice(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice of a RAS-ordered array, oriented for viewing (see module docstring)."""
    return np.take(array, index, axis=axis).T[::-1, ::-1]


def pixel_repeats(spacing: Sequence[float] | None, axis: int, zoom: int) -> tuple[int, int]:
    """Pixel repeats for (rows, cols) so that pixels are roughly square in millimetres."""
    a, b = [i for i in range(3) if i != axis]
    if spacing is None:
        return zoom, zoom
    sa, sb = float(spacing[a]), float(spacing[b])
    m = min(sa, sb)
    return max(1, round(zoom * sb / m)), max(1, round(zoom * sa / m))


def upsample(img: np.ndarray, reps: tuple[int, int]) -> np.ndarray:
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


def prepare_inputs(
    ct: np.ndarray, labels: np.ndarray, pred: np.ndarray | None, colors: Sequence[RGB],
    axis: int, window: tuple[float, float], alpha: float, zoom: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Arrays of one figure, checked: same shapes, a colour for every label, a sane window, alpha and zoom."""
    ct, labels = np.asarray(ct), np.asarray(labels)
    pred = None if pred is None else np.asarray(pred)
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
    if zoom < 1:
        raise ConfigError(f"zoom must be >= 1, got {zoom}")
    return ct, labels, pred


def labelled_slices(arrays: Sequence[np.ndarray | None], axis: int) -> np.ndarray:
    """Indices along ``axis`` of the slices that hold an organ in any of ``arrays``."""
    mask = np.zeros(arrays[0].shape[axis], bool)  # type: ignore[union-attr]
    other = tuple(i for i in range(3) if i != axis)
    for a in arrays:
        if a is not None:
            mask |= ((a > 0) & (a != IGNORE_INDEX)).any(axis=other)
    return np.flatnonzero(mask)


def draw_text(img: "object", xy: tuple[int, int], text: str, fill: int | RGB) -> None:
    from PIL import ImageDraw

    ImageDraw.Draw(img).text(xy, text, fill=fill)  # type: ignore[arg-type]


__all__ = ["DEFAULT_WINDOW", "HEADER_PX", "PANEL_NAMES", "RGB", "default_colors", "draw_text", "labelled_slices",
           "overlay", "pixel_repeats", "prepare_inputs", "upsample", "view_slice", "window_to_unit"]
