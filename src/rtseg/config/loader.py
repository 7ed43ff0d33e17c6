"""Load a YAML config, apply ``--set`` overrides, validate; errors name their source (the file, or the
``--set KEY=VALUE`` that set the key) and the key, and an unknown key gets the closest valid one."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from rtseg.config.schema import Config
from rtseg.config.yamlfile import read_yaml_mapping
from rtseg.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """``A.B.C=value`` -> (["A","B","C"], yaml-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: --set takes KEY=VALUE (expected KEY.PATH=VALUE, e.g. --set TRAINING.ITER_MAX=200)")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text}: empty key (expected KEY.PATH=VALUE, e.g. --set TRAINING.ITER_MAX=200)")
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
                raise ConfigError(f"--set {item}: {p} is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def _section(model: Optional[type[BaseModel]], key: str) -> Optional[type[BaseModel]]:
    field = model.model_fields.get(key) if model is not None else None
    ann = field.annotation if field is not None else None
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name in model.model_fields:
        out.append(prefix + name)
        sub = _section(model, name)
        if sub is not None:
            out.extend(_all_keys(sub, f"{prefix}{name}."))
    return out


def _closest(word: str, choices: Sequence[str], cutoff: float = 0.6) -> Optional[str]:
    by_upper = {c.upper(): c for c in choices}
    hit = difflib.get_close_matches(word.upper(), list(by_upper), n=1, cutoff=cutoff)
    return by_upper[hit[0]] if hit else None


def suggest_key(model: type[BaseModel], parts: Sequence[str]) -> Optional[str]:
    """The valid dotted key closest to ``parts`` (each part matched among its section's keys, case aside), or the
    same key name in another section; None when nothing is close."""
    fixed, node = [], model
    for part in parts:
        if node is None:  # below a plain value: nothing to walk
            fixed = []
            break
        name = part if part in node.model_fields else _closest(part, list(node.model_fields))
        if name is None:
            fixed = []
            break
        fixed.append(name)
        node = _section(node, name)
    if fixed and list(fixed) != list(parts):
        return ".".join(fixed)
    last = [k for k in _all_keys(model) if k.rsplit(".", 1)[-1].upper() == parts[-1].upper()]
    if len(last) == 1 and last[0] != ".".join(parts):
        return last[0]
    return _closest(".".join(parts), _all_keys(model), cutoff=0.8)


def _override_for(loc: tuple[str, ...], overrides: Sequence[tuple[list[str], str]],
                  unknown: bool) -> Optional[tuple[list[str], str]]:
    """The last ``--set`` whose key covers ``loc`` (the error is in the value it set), or, for an ``unknown`` key,
    whose key passes through it (``--set TRAINNG.ITER_MAX=1`` made the section TRAINNG)."""
    for parts, text in reversed(overrides):
        if tuple(parts) == loc[: len(parts)] or (unknown and loc and tuple(parts[: len(loc)]) == loc):
            return parts, text
    return None


def format_validation_error(source: str, err: ValidationError, model: Optional[type[BaseModel]] = None,
                            overrides: Sequence[str] = ()) -> str:
    """One line per error: its source (``--set KEY=VALUE`` where one set the key, else ``source``), the key and
    what is wrong; an unknown key gets the closest valid one of ``model``."""
    sets = [(parse_override(o)[0], o) for o in overrides]
    lines = []
    for e in err.errors():
        loc_parts = tuple(str(x) for x in e["loc"])
        loc = ".".join(loc_parts) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        key_parts: Sequence[str] = loc_parts
        override = _override_for(loc_parts, sets, e["type"] == "extra_forbidden")
        if override is not None and e["type"] == "extra_forbidden" and len(override[0]) > len(loc_parts):
            key_parts = override[0]  # the whole key the user typed, e.g. TRAINNG.ITER_MAX
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            guess = suggest_key(model, key_parts) if model is not None else None
            msg += f"; did you mean {guess}?" if guess else " (misspelt?)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "literal_error":
            msg = f"got {e.get('input')!r}; {msg}"
        elif "input" in e and not isinstance(e["input"], dict):
            msg = f"got {e['input']!r}; {msg}"
        if override is not None:
            where = "" if len(override[0]) >= len(loc_parts) else f"{loc}: "
            lines.append(f"--set {override[1]}: {where}{msg}")
            continue
        covered = [text for parts, text in sets if tuple(parts[: len(loc_parts)]) == loc_parts and loc_parts]
        with_sets = f" with --set {', --set '.join(covered)}" if covered else ""
        lines.append(f"{source}{with_sets}: {loc}: {msg}")
    return "; ".join(lines)


def config_from_dict(data: dict[str, Any], source: str = "<config>", overrides: Sequence[str] = ()) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err, Config, overrides)) from None


def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Config:
    p = Path(path)
    overrides = list(overrides)
    data = apply_overrides(read_yaml_mapping(p, entries="sections"), overrides)
    return config_from_dict(data, str(p), overrides)


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
