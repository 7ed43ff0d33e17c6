"""Organ colours as a user gives them on the command line: a JSON list, a JSON file or an rtseg config.

It lives in ``config`` (not ``labels``) because a config file is one of the accepted sources.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rtseg.config.loader import load_config
from rtseg.errors import ConfigError
from rtseg.labels import RGB


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
