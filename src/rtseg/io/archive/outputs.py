"""What an archive conversion leaves beside the NIfTI pairs so training needs no hand-written file:
the dataset JSON (splits, contoured organs per case, exclusions, provenance), a config, the name report.

Splits are kept from an earlier run's dataset JSON; new cases are dealt by a hash of their name
(20% validation, at least one case once there are two; 10% test), so they do not move when the
archive grows. Exclusions made since (``rtseg convert exclude``) are kept.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from rtseg.io.atomic import atomic_path
from rtseg.io.layouts.dataset_json import DATASET_JSON, FORMAT, VERSION, is_dataset_json
from rtseg.io.jsonfile import read_json, write_json
from rtseg.labels import default_colors

CONFIG_NAME = "rtseg_train.yml"
NAME_REPORT_JSON, NAME_REPORT_TEXT = "roi_name_report.json", "roi_name_report.txt"
SPLIT_NAMES = ("train", "val", "test")


def _order(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def assign_splits(cases: Sequence[str], previous: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """train/val/test case lists: earlier assignments kept, new cases dealt by hash (see the module rule)."""
    before = {c: s for s, ids in (previous or {}).items() if s in SPLIT_NAMES for c in ids}
    out: dict[str, list[str]] = {s: [c for c in cases if before.get(c) == s] for s in SPLIT_NAMES}
    new = sorted((c for c in cases if c not in before), key=_order)
    n = len(cases)
    want_val = max(1 if n >= 2 else 0, round(0.2 * n))
    want_test = round(0.1 * n)
    for c in new:
        if len(out["val"]) < want_val:
            out["val"].append(c)
        elif len(out["test"]) < want_test:
            out["test"].append(c)
        else:
            out["train"].append(c)
    if not out["train"] and out["val"]:  # one case: it trains and validates
        out["train"] = list(out["val"])
    return {s: sorted(ids) for s, ids in out.items()}


def write_dataset_json(out: Path, class_names: Sequence[str], records: Mapping[str, Mapping[str, Any]]) -> Path:
    """``OUT/rtseg_dataset.json`` from the case records, keeping splits and exclusions of an earlier one."""
    path = out / DATASET_JSON
    previous = read_json(path, "dataset JSON") if path.is_file() else {}
    previous = previous if is_dataset_json(previous) else {}
    cases = sorted(records)
    excluded = {c: e for c, e in (previous.get("excluded") or {}).items() if c in records}
    keep = ("shape", "spacing_mm", "source", "organs", "refused_sets", "notes")
    table = {
        "format": FORMAT, "version": VERSION, "class_names": list(class_names),
        "splits": assign_splits(cases, previous.get("splits")),
        "cases": {c: list(records[c]["contoured"]) for c in cases},
        "excluded": excluded,
        "details": {c: {k: records[c][k] for k in keep if k in records[c]} for c in cases},
    }
    return write_json(table, path)


def write_train_config(out: Path, class_names: Sequence[str]) -> Path:
    """``OUT/rtseg_train.yml``: a config that trains on this folder as it is (absolute paths)."""
    root = out.resolve()
    dataset = root / DATASET_JSON
    colors = ", ".join(f"[{r}, {g}, {b}]" for r, g, b in default_colors(len(class_names)))
    text = f"""# Written by 'rtseg convert dicom-dataset': trains on {root} as converted.
# Splits, contoured organs per case and exclusions come from {DATASET_JSON}
# (exclude a case or organ with 'rtseg convert exclude'); spacing, patch size and
# normalisation are planned from the training split (PLAN: auto).
JOB: seg
# CUDA left out: the GPU when there is one, else the CPU (CUDA: true insists, CUDA: false keeps to the CPU)
MODEL:
  NAME: ResUnet_3D
  BASE_FILTERS: 16
  CHANNEL_IN: 1
DATASET:
  NAME: nifti
  PATH: {str(root)!r}
  SPLITS: {str(dataset)!r}
  PARTIAL_LABELS: {str(dataset)!r}
  N_CLASSES: {len(class_names)}
  CLASS_NAMES: [{", ".join(repr(c) for c in class_names)}]
  COLOR_MAP: [{colors}]
  TRAIN_SPLIT: train
  VAL_SPLIT: val
  TEST_SPLIT: test
  PLAN: auto
  FG_SAMPLING: class
TRAINING:
  ITER_MAX: 20000
  BATCH_SIZE: 2
  VAL_INTERVAL: 1000
  PRINT_INTERVAL: 100
  OPTIM:
    name: adamw
    lr: 0.003
    weight_decay: 0.0001
  LR_SCHEDULER:
    name: poly_lr
    warmup_iters: 200
  LOSS_FUNC:
    name: dice_ce
"""
    target = out / CONFIG_NAME
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def write_name_report(out: Path, report: Mapping[str, Any], text: str) -> tuple[Path, Path]:
    json_path = write_json(report, out / NAME_REPORT_JSON)
    with atomic_path(out / NAME_REPORT_TEXT) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return json_path, out / NAME_REPORT_TEXT
