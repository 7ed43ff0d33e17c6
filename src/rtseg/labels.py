"""What a label value means: class names, display colours, the ignore value, the background-first rule.

One owner for the conventions every layer shares (config defaults, data loading, losses,
metrics, figures, RTSTRUCT names), so none of them keeps its own copy of a number or a list.
Label 0 is always background; labels 1..N-1 are organs; ``IGNORE_INDEX`` marks voxels that no
loss or metric may count (outside the scan after augmentation, or deliberately unlabelled).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

from rtseg.errors import ConfigError

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
    """Explicit names, else the seed's pelvic names for 6 classes, else ``class_<i>`` (background first)."""
    if names is not None:
        return list(names)
    if n_classes == len(PELVIS_CLASS_NAMES):
        return list(PELVIS_CLASS_NAMES)
    return [BACKGROUND] + [f"class_{i}" for i in range(1, n_classes)]


def default_colors(n_classes: int, colors: Optional[Sequence[Sequence[int]]] = None) -> list[RGB]:
    """RGB per organ (labels 1..N-1): explicit colours, else the seed's map extended cyclically."""
    if colors is not None:
        return [(int(c[0]), int(c[1]), int(c[2])) for c in colors]
    pool = PELVIS_COLOR_MAP + EXTRA_COLORS
    return [pool[i % len(pool)] for i in range(max(1, n_classes - 1))]


def _color_list(value: Any) -> Any:
    """The colour list inside a parsed JSON value: the list itself, ``COLOR_MAP`` or ``DATASET.COLOR_MAP``."""
    if isinstance(value, dict):
        dataset = value.get("DATASET")
        return value.get("COLOR_MAP", dataset.get("COLOR_MAP") if isinstance(dataset, dict) else None)
    return value


def _is_rgb(c: Any) -> bool:
    return isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)


def parse_colors(text: str, option: str = "--colors") -> list[RGB]:
    """Organ colours (labels 1..N-1, in order) from what a user types for ``option``.

    ``text`` is a JSON list ``[[r, g, b], ...]``, a ``.json`` file holding that list (or an object
    with ``COLOR_MAP`` / ``DATASET.COLOR_MAP``), or an rtseg config ``.yml``/``.yaml`` whose
    ``DATASET`` gives the colours (its COLOR_MAP, else the default colours for its N_CLASSES).
    """
    source, raw = option, text
    if not text.lstrip().startswith("["):
        path = Path(text)
        if path.suffix.lower() in (".yml", ".yaml"):
            from rtseg.config.loader import load_config  # config sits beside labels; loaded only when asked for

            return load_config(path).DATASET.colors()
        if not path.is_file():
            raise ConfigError(f"{option}: {text!r} is neither a JSON list like [[255,0,0],[0,255,0]] nor an existing .json or config .yml file")
        source, raw = str(path), path.read_text()
    try:
        value = _color_list(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}); expected a list of [r, g, b]") from None
    if not (isinstance(value, list) and value and all(_is_rgb(c) for c in value)):
        raise ConfigError(f"{source}: expected a non-empty list of [r, g, b] with integers 0..255, one per organ in label order, "
                          f"got {str(value)[:80]}")
    return [(int(c[0]), int(c[1]), int(c[2])) for c in value]


def is_organ(value: int) -> bool:
    """True for labels that are organs (not background, not the ignore value)."""
    return value != 0 and value != IGNORE_INDEX
