"""YAML config files (training configs, ``rtseg serve`` configs): one reader with one-line errors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from rtseg.errors import ConfigError


def read_yaml_mapping(path: str | os.PathLike[str], entries: str = "keys") -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is ``{}``); ``entries`` names what it maps
    in the error for anything else (e.g. "sections" for a training config)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not valid YAML (not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of {entries} at the top level, found {type(data).__name__}")
    return data
