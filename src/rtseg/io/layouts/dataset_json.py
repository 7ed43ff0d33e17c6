"""Split and partial-label JSON files, and rtseg's dataset JSON that holds both (plus exclusions).

``DATASET.SPLITS`` reads ``{split: [case ids]}``; ``DATASET.PARTIAL_LABELS`` reads ``{case: [organs]}``
or OpenKBP's ``{"cases": [{"id", "organs"}]}``. The dataset JSON that ``rtseg convert dicom-dataset``
writes (``FORMAT``) is read by both keys::

    {"format": "rtseg-dataset", "version": 1, "class_names": [...],
     "splits": {"train": [...], "val": [...], "test": [...]},
     "cases": {case: [contoured organs]},
     "excluded": {case: {"organs": "all" | [organs], "reason": "..."}},
     "details": {case: {spacing, shape, source UIDs, where each organ came from}}}

An excluded case (``"organs": "all"``) is left out of every split; an excluded organ counts as not
contoured in that case (its voxels are then unknown to the loss, as for any partial label).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from rtseg.errors import DataError
from rtseg.io.jsonfile import read_json, write_json

FORMAT, VERSION = "rtseg-dataset", 1
#: the dataset JSON's file name beside the NIfTI pairs (written by the archive import)
DATASET_JSON = "rtseg_dataset.json"
ALL = "all"


def is_dataset_json(table: Any) -> bool:
    return isinstance(table, dict) and table.get("format") == FORMAT


def excluded_organs(table: Mapping[str, Any], path: Path) -> dict[str, set[str] | None]:
    """case -> excluded organ names (lower case), or None when the whole case is excluded."""
    out: dict[str, set[str] | None] = {}
    for case, entry in (table.get("excluded") or {}).items():
        organs = entry.get("organs") if isinstance(entry, dict) else entry
        if organs == ALL:
            out[str(case)] = None
        elif isinstance(organs, list) and all(isinstance(o, str) for o in organs):
            out[str(case)] = {o.lower() for o in organs}
        else:
            raise DataError(f"{path}: excluded[{case!r}]: expected {{\"organs\": \"all\" or [organ names]}}, found {entry!r}")
    return out


def read_split_ids(path: str | os.PathLike[str], split: str) -> list[str]:
    """Case ids of ``split`` from a splits file or a dataset JSON (wholly excluded cases left out)."""
    p = Path(path)
    table = read_json(p, "DATASET.SPLITS")
    if not isinstance(table, dict):
        raise DataError(f"{p}: expected a JSON object {{split: [case ids]}}")
    splits = table.get("splits") if is_dataset_json(table) else table
    if not isinstance(splits, dict) or split not in splits:
        raise DataError(f"{p}: no split {split!r}; found {sorted(splits) if isinstance(splits, dict) else 'none'}")
    gone = {c for c, organs in excluded_organs(table, p).items() if organs is None} if is_dataset_json(table) else set()
    return [str(c) for c in splits[split] if str(c) not in gone]


def _flatten(table: Any, p: Path) -> tuple[dict[str, Any], dict[str, set[str] | None]]:
    excluded = excluded_organs(table, p) if is_dataset_json(table) else {}
    if isinstance(table, dict) and "cases" in table and isinstance(table["cases"], (dict, list)):
        table = table["cases"]
    if isinstance(table, list):  # [{"id": ..., "organs"/"labels"/"classes": [...]}, ...]
        flat = {}
        for e in table:
            cid = e.get("id") or e.get("case") or e.get("case_id")
            organs = e.get("organs", e.get("classes", e.get("labels")))
            if cid is None or organs is None:
                raise DataError(f"{p}: list entries need 'id' and 'organs' keys, found {sorted(e)}")
            flat[str(cid)] = organs
        table = flat
    if not isinstance(table, dict):
        raise DataError(f"{p}: expected {{case id: [organ names or indices]}}")
    return table, excluded


def read_partial_labels(path: str | os.PathLike[str], case_ids: Iterable[str], class_names: Sequence[str]) -> dict[str, list[int]]:
    """Per-case contoured classes (indices, background 0 always known); cases not listed are fully labelled.

    Organs excluded in a dataset JSON are not contoured for their case."""
    p = Path(path)
    table, excluded = _flatten(read_json(p, "DATASET.PARTIAL_LABELS"), p)
    lookup = {n.lower(): i for i, n in enumerate(class_names)}
    out: dict[str, list[int]] = {}
    for cid in case_ids:
        if cid not in table:
            continue
        known = {0}
        for item in table[cid]:
            if isinstance(item, int) and 0 <= item < len(class_names):
                known.add(item)
            elif isinstance(item, str) and item.lower() in lookup:
                known.add(lookup[item.lower()])
            else:
                raise DataError(f"{p}: case {cid}: unknown class {item!r}; valid: {list(class_names)}")
        gone = excluded.get(cid) or set()
        out[cid] = sorted(k for k in known if k == 0 or class_names[k].lower() not in gone)
    return out


def read_dataset_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A dataset JSON written by ``rtseg convert dicom-dataset``, or one clear error."""
    p = Path(path)
    table = read_json(p, "dataset JSON")
    if not is_dataset_json(table) or table.get("version") != VERSION:
        raise DataError(f"{p}: not an rtseg dataset JSON (expected \"format\": \"{FORMAT}\", \"version\": {VERSION})")
    for key in ("class_names", "splits", "cases"):
        if key not in table:
            raise DataError(f"{p}: dataset JSON without {key!r}")
    table.setdefault("excluded", {})
    table.setdefault("details", {})
    return table


def set_exclusion(path: str | os.PathLike[str], case: str, organs: Sequence[str] | None, reason: str,
                  undo: bool = False) -> dict[str, Any]:
    """Exclude a case (``organs`` None) or some of its organs from training, or lift the exclusion (``undo``)."""
    p = Path(path)
    table = read_dataset_json(p)
    if case not in table["cases"]:
        raise DataError(f"{p}: no case {case!r}; cases are {', '.join(sorted(table['cases'])[:8])}...")
    excluded = excluded_organs(table, p)
    current = excluded.get(case, set())
    if undo:
        new = None if organs is None else (set() if current is None else current - {o.lower() for o in organs})
        if organs is None or not new:
            table["excluded"].pop(case, None)
        else:
            table["excluded"][case] = {"organs": sorted(new), "reason": table["excluded"][case].get("reason", "")}
    else:
        names = {n.lower() for n in table["class_names"][1:]}
        unknown = [o for o in organs or [] if o.lower() not in names]
        if unknown:
            raise DataError(f"{p}: unknown organ(s) {unknown}; organs are {table['class_names'][1:]}")
        value: Any = ALL if organs is None or current is None else sorted(current | {o.lower() for o in organs})
        table["excluded"][case] = {"organs": value, "reason": reason}
    write_json(table, p)
    return table
