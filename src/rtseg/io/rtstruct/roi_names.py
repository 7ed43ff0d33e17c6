"""ROI names: AAPM TG-263 standard names for rtseg's classes, clinic variants, and the mapping file.

Writing: an organ class gets its TG-263 name (``Femur_Head_L`` for
``femoral_head_left``) unless a mapping file names it otherwise; classes TG-263
does not cover keep their own name. Reading: a class accepts its own name, its
TG-263 name and the synonym group it belongs to, all compared after
:func:`roi_key`, which ignores case, spaces, ``_``/``-``/``.``, camel case and
the spelling of the side ("Lt"/"L"/"Left"), and knows common abbreviations
("Fem Head L" = "Femur_Head_L").
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

from rtseg.errors import ConfigError

# class -> (TG-263 primary name, SNOMED CT keyword in pydicom's code dictionary, laterality keyword or "")
TG263: dict[str, tuple[str, str, str]] = {
    "prostate": ("Prostate", "Prostate", ""),
    "bladder": ("Bladder", "Bladder", ""),
    "rectum": ("Rectum", "Rectum", ""),
    "femoral_head_left": ("Femur_Head_L", "HeadOfFemur", "Left"),
    "femoral_head_right": ("Femur_Head_R", "HeadOfFemur", "Right"),
    "brainstem": ("Brainstem", "BrainStem", ""),
    "spinal_cord": ("SpinalCord", "SpinalCord", ""),
    "parotid_left": ("Parotid_L", "ParotidGland", "Left"),
    "parotid_right": ("Parotid_R", "ParotidGland", "Right"),
    "esophagus": ("Esophagus", "Esophagus", ""),
    "larynx": ("Larynx", "Larynx", ""),
    "mandible": ("Bone_Mandible", "Mandible", ""),
}

# Synonym groups: an ROI whose key is in the group of a class's key is that class.
# Matching is exact after roi_key, so "Rectum_PRV" or "CTV_Prostate" never match by accident.
DEFAULT_ROI_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("prostate", "prostate gland", "prostata", "prost", "prostate_o"),
    ("bladder", "urinary bladder", "bladder_o", "blad", "urinarybladder", "vessie", "harnblase"),
    ("rectum", "rectum_o", "rect", "rectal", "rektum"),
    ("femoral_head_left", "Femur_Head_L", "femoral head left", "femur_l", "femurhead_l", "fem_head_l",
     "head of femur left", "femoral_hd_l"),
    ("femoral_head_right", "Femur_Head_R", "femoral head right", "femur_r", "femurhead_r", "fem_head_r",
     "head of femur right", "femoral_hd_r"),
    ("brainstem", "brain stem", "brain_stem", "truncus cerebri"),
    ("spinal_cord", "SpinalCord", "cord", "spinal canal", "myelon"),
    ("parotid_right", "Parotid_R", "right parotid", "parotid gland right"),
    ("parotid_left", "Parotid_L", "left parotid", "parotid gland left"),
    ("esophagus", "oesophagus", "esoph"),
    ("larynx",),
    ("mandible", "Bone_Mandible", "mandible_bone", "jaw", "mandibula"),
)

_SIDES = {"l": "L", "lt": "L", "left": "L", "r": "R", "rt": "R", "right": "R"}
_WORDS = {"fem": "femur", "femoral": "femur", "hd": "head", "oesophagus": "esophagus", "gland": ""}
_FILLER = {"of", "the"}
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_SEP = re.compile(r"[\s_\-.]+")


def roi_key(name: str) -> str:
    """Comparison key of an ROI or class name: words in order, abbreviations expanded, the side last."""
    tokens = [t for t in _SEP.split(_CAMEL.sub(" ", name.strip()).lower()) if t]
    sides = sorted({_SIDES[t] for t in tokens if t in _SIDES})
    words = [_WORDS.get(t, t) for t in tokens if t not in _SIDES and t not in _FILLER]
    return "".join(words) + ("/" + "".join(sides) if sides else "")


def synonyms(class_name: str) -> set[str]:
    """Keys a class accepts: its own, its TG-263 name's and those of the synonym group it belongs to."""
    key = roi_key(class_name)
    keys = {key}
    for group in DEFAULT_ROI_SYNONYMS:
        normed = {roi_key(g) for g in group}
        if key in normed:
            keys |= normed
    return keys


def tg263_entry(class_name: str) -> tuple[str, str, str] | None:
    """The TG-263 row for a class, whatever its spelling ("Femoral head L", "femoral_head_left")."""
    keys = synonyms(class_name)
    for cls, entry in TG263.items():
        if roi_key(cls) in keys:
            return entry
    return None


def _read_mapping(p: Path, what: str) -> object:
    if not p.is_file():
        raise ConfigError(f"{p}: {what} file not found")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix.lower() in (".yml", ".yaml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:
        raise ConfigError(f"{p}: not a readable JSON/YAML {what} ({type(exc).__name__})") from None


def load_roi_name_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """A mapping file ``{class: ROI name}`` (.json or .yml/.yaml) that overrides the TG-263 names."""
    p = Path(path)
    data = _read_mapping(p, "ROI name mapping")
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                             for k, v in data.items()):
        raise ConfigError(f"{p}: expected a mapping of class name -> ROI name (strings), e.g. {{\"bladder\": \"Bladder\"}}")
    return {k: v.strip() for k, v in data.items()}


def load_roi_aliases(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """An alias file ``{class: [ROI names]}`` (.json or .yml/.yaml), e.g. the name report's ``suggested_aliases``."""
    p = Path(path)
    data = _read_mapping(p, "ROI alias")
    if isinstance(data, dict) and "suggested_aliases" in data:  # the name report itself
        data = data["suggested_aliases"]
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v)
                                             for k, v in data.items()):
        raise ConfigError(f"{p}: expected a mapping of class name -> list of ROI names, e.g. {{\"rectum\": [\"Rectum_old\"]}}")
    return {k: [n.strip() for n in v if n.strip()] for k, v in data.items()}


def roi_names_for(organs: Sequence[str], overrides: Mapping[str, str] | None = None, *,
                  tg263: bool = True) -> list[str]:
    """ROI names for organ classes (labels 1..N): the override, else the TG-263 name (unless ``tg263`` is
    False), else the class name."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(organs))
    if unknown:
        raise ConfigError(f"ROI names given for unknown classes {unknown}; classes are {list(organs)}")
    names = []
    for cls in organs:
        entry = tg263_entry(cls) if tg263 else None
        names.append(overrides.get(cls) or (entry[0] if entry else cls))
    return check_roi_names(names)


def check_roi_names(names: Sequence[str]) -> list[str]:
    """``names`` if they can be written as ROI names: DICOM LO (<= 64 characters, no backslash), not empty,
    and no two the same after :func:`roi_key` (a reader could not tell them apart)."""
    bad = [n for n in names if not n.strip() or len(n) > 64 or "\\" in n]
    if bad:
        raise ConfigError(f"ROI names {bad}: expected 1 to 64 characters without backslash (DICOM LO)")
    keys = [roi_key(n) for n in names]
    dup = sorted({n for n, k in zip(names, keys) if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"ROI names {dup} would name two ROIs the same; give each class its own name")
    return list(names)


def match_roi_names(
    roi_names: Sequence[str],
    class_names: Sequence[str],
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """Map ROI names to class names (background, class 0, is never matched).

    A class accepts :func:`synonyms` of its name and ``aliases[class]``, all
    compared after :func:`roi_key`.
    """
    aliases = dict(aliases or {})
    unknown = sorted(set(aliases) - set(class_names))
    if unknown:
        raise ConfigError(f"ROI aliases given for unknown classes {unknown}; classes are {list(class_names)}")
    accept: dict[str, str] = {}
    for cname in class_names[1:]:
        names = synonyms(cname) | {roi_key(a) for a in aliases.get(cname, ())}
        for n in names:
            other = accept.get(n)
            if other is not None and other != cname:
                raise ConfigError(f"ROI name {n!r} would match both classes {other!r} and {cname!r}; fix the aliases")
            accept[n] = cname
    return {r: accept[roi_key(r)] for r in roi_names if roi_key(r) in accept}
