"""Load a YAML config, apply ``--set`` overrides, validate; errors name the file and key."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from rtseg.config.schema import Config
from rtseg.config.yamlfile import read_yaml_mapping
from rtseg.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """``A.B.C=value`` -> (["A","B","C"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. TRAINING.ITER_MAX=200")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = {}
                node[p] = nxt
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: {p} is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def format_validation_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (misspelt?)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "literal_error":
            msg = f"got {e.get('input')!r}; {msg}"
        elif "input" in e and not isinstance(e["input"], dict):
            msg = f"got {e['input']!r}; {msg}"
        lines.append(f"{source}: {loc}: {msg}")
    return "; ".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err)) from None


def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Config:
    p = Path(path)
    data = apply_overrides(read_yaml_mapping(p, entries="sections"), overrides)
    return config_from_dict(data, str(p))


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
