"""What a label value means: class names, display colours, the ignore value, the background-first rule.

One owner for the conventions every layer shares (config defaults, data loading, losses,
metrics, figures, RTSTRUCT names), so none of them keeps its own copy of a number or a list.
Label 0 is always background; labels 1..N-1 are organs; ``IGNORE_INDEX`` marks voxels that no
loss or metric may count (outside the scan after augmentation, or deliberately unlabelled).
"""
from __future__ import annotations

from typing import Optional, Sequence


RGB = tuple[int, int, int]

IGNORE_INDEX = 250
BACKGROUND = "background"

PELVIS_CLASS_NAMES: tuple[str, ...] = (
    BACKGROUND,
    "prostate",
    "bladder",
    "rectum",
    "femoral_head_left",
    "femoral_head_right",
)
# COLOR_MAP of the original code base's configs for the five pelvic organs, then colours for further organs.
PELVIS_COLOR_MAP: tuple[RGB, ...] = (
    (229, 255, 204),
    (0, 255, 255),
    (204, 0, 102),
    (255, 0, 0),
    (0, 255, 0),
)
EXTRA_COLORS: tuple[RGB, ...] = ((255, 255, 0), (255, 128, 0), (128, 0, 255), (0, 128, 255), (255, 0, 255))


def default_class_names(n_classes: int, names: Optional[Sequence[str]] = None) -> list[str]:
    """Explicit names, else the original code base's pelvic names for 6 classes, else ``class_<i>`` (background first)."""
    if names is not None:
        return list(names)
    if n_classes == len(PELVIS_CLASS_NAMES):
        return list(PELVIS_CLASS_NAMES)
    return [BACKGROUND] + [f"class_{i}" for i in range(1, n_classes)]


def default_colors(n_classes: int, colors: Optional[Sequence[Sequence[int]]] = None) -> list[RGB]:
    """RGB per organ (labels 1..N-1): explicit colours, else the original code base's map extended cyclically."""
    if colors is not None:
        return [(int(c[0]), int(c[1]), int(c[2])) for c in colors]
    pool = PELVIS_COLOR_MAP + EXTRA_COLORS
    return [pool[i % len(pool)] for i in range(max(1, n_classes - 1))]


def is_organ(value: int) -> bool:
    """True for labels that are organs (not background, not the ignore value)."""
    return value != 0 and value != IGNORE_INDEX
