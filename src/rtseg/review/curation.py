"""Curation of a converted dataset before training: flag training contours that look wrong.

Each case is compared with the *other* cases (leave one out) through the same per-organ statistics
and rules as the contour QA of predictions (``review.organ_stats.summarize``, ``review.qa.organ_flags``:
volume far outside the others, organ far from its usual place relative to the body, more pieces than
any other case has), plus three rules a hand-drawn contour needs (``CurationRules``): a left organ
right of the body's centre or a right organ left of it (left/right swapped), too few contoured slices,
and empty slices between contoured ones (a gap). Only organs contoured in a case are judged. The
scan-edge rule of the QA is left out: a cut-off field of view is not a contour error.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.io.archive.convert import parallel_map
from rtseg.io.layouts.dataset_json import excluded_organs, read_dataset_json, read_partial_labels
from rtseg.io.naming import ct_file, labels_file
from rtseg.io.nifti import read_nifti
from rtseg.io.rtstruct.roi_names import roi_key
from rtseg.review.measures import ras_axes
from rtseg.review.organ_stats import case_facts, summarize
from rtseg.review.qa import QaRules, organ_flags

CURATION_VERSION = 1
#: weights of the curation-only rules (the QA rules keep theirs)
WEIGHTS = {"laterality": 3, "slices": 2, "gap": 2}
SKIPPED_QA_RULES = ("cut_off",)


@dataclass(frozen=True)
class CurationRules:
    """Thresholds of the curation rules (docs/CLINICAL_IO.md, "Curation")."""

    # training contours vary more than one model's predictions: volume flagged beyond p99 x 1.6 / p1 x 0.4 of the others
    qa: QaRules = field(default_factory=lambda: QaRules(volume_margin=0.6))
    side_margin_mm: float = 5.0  # a left organ this far right of the body centre (or a right one left of it)
    min_slices: int = 3  # fewer contoured slices than this ...
    min_extent_fraction: float = 0.5  # ... or fewer than this fraction of the other cases' median slice count
    max_gap_slices: int = 0  # empty slices inside an organ's superior-inferior range allowed


def _flag(kind: str, text: str, organ: str) -> dict[str, Any]:
    return {"organ": organ, "rule": kind, "weight": WEIGHTS[kind], "text": text}


def side_of(class_name: str) -> str:
    """'L', 'R' or '' from a class name (``femoral_head_left`` -> 'L'), as ROI names are read."""
    side = roi_key(class_name).partition("/")[2]
    return side if side in ("L", "R") else ""


def slice_facts(labels: np.ndarray, affine: np.ndarray, label: int) -> dict[str, int]:
    """Contoured slices of one organ along the superior-inferior array axis, and its largest run of empty ones."""
    axis = next(a for a, (ras, _) in enumerate(ras_axes(affine)) if ras == 2)
    other = tuple(a for a in range(3) if a != axis)
    hit = np.flatnonzero(np.any(labels == label, axis=other))
    if hit.size == 0:
        return {"slices": 0, "gap": 0}
    runs = np.diff(hit) - 1
    return {"slices": int(hit.size), "gap": int(runs.max()) if runs.size else 0}


def case_curation_facts(ct: np.ndarray, labels: np.ndarray, affine: np.ndarray, class_names: Sequence[str],
                        contoured: Sequence[int]) -> dict[str, Any]:
    """The QA facts of one case (contoured organs only) and each organ's slice facts."""
    facts = case_facts(labels, affine, class_names, ct, contoured)
    for row in facts["organs"]:
        row.update(slice_facts(labels, affine, row["label"]))
    return facts


def _own_flags(row: Mapping[str, Any], others: Sequence[Mapping[str, Any]], rules: CurationRules) -> list[dict[str, Any]]:
    name, out = row["organ"], []
    side, offset = side_of(name), row.get("centroid_offset_mm")
    if side and offset is not None:
        x = offset[0]  # RAS: + is the patient's right
        if (side == "L" and x > rules.side_margin_mm) or (side == "R" and x < -rules.side_margin_mm):
            where = "right" if x > 0 else "left"
            out.append(_flag("laterality", f"{name} lies {abs(x):.0f} mm {where} of the body centre: left and right swapped?", name))
    same = [r["slices"] for r in others if r["organ"] == name and r["components"] > 0]
    usual = float(np.median(same)) if same else None
    if row["slices"] < rules.min_slices or (usual is not None and row["slices"] < rules.min_extent_fraction * usual):
        ref = f" (others: median {usual:.0f})" if usual is not None else ""
        out.append(_flag("slices", f"{name} contoured on {row['slices']} slice(s){ref}", name))
    if row["gap"] > rules.max_gap_slices:
        out.append(_flag("gap", f"{name} has a gap of {row['gap']} empty slice(s) between contoured slices", name))
    return out


def flag_cases(facts: Mapping[str, Mapping[str, Any]], class_names: Sequence[str],
               rules: CurationRules = CurationRules()) -> dict[str, dict[str, Any]]:
    """Per case: organ rows with their flags, compared with the other cases (leave one out)."""
    out = {}
    for case, f in facts.items():
        others = [g for c, g in facts.items() if c != case]
        stats = summarize(others, class_names) if others else None
        other_rows = [r for g in others for r in g["organs"]]
        rows, flags = [], []
        for row in f["organs"]:
            r = dict(row)
            r["flags"] = [x for x in organ_flags(r, stats, rules.qa) if x["rule"] not in SKIPPED_QA_RULES]
            r["flags"] += _own_flags(r, other_rows, rules)
            rows.append(r)
            flags += r["flags"]
        out[case] = {"case": case, "organs": rows, "flags": flags, "n_flags": len(flags),
                     "flag_weight": sum(x["weight"] for x in flags), "rules_skipped": []}
    return out


def _facts_job(job: tuple[Path, str, tuple[str, ...], tuple[int, ...]]) -> dict[str, Any]:
    """One case's curation facts from its NIfTI pair (a worker process runs it)."""
    folder, case, names, contoured = job
    ct, lab = read_nifti(folder / ct_file(case)), read_nifti(folder / labels_file(case))
    return case_curation_facts(ct.array, lab.array, ct.affine, names, contoured)


def curate_dataset(dataset_json: str | Path, rules: CurationRules = CurationRules(), workers: int = 2,
                   progress: bool = True) -> dict[str, Any]:
    """Flags for every case of a converted dataset (``rtseg_dataset.json`` beside its NIfTI pairs).

    Wholly excluded cases are not judged; excluded organs count as not contoured. The cases are
    measured on ``workers`` processes."""
    path = Path(dataset_json)
    table = read_dataset_json(path)
    names = list(table["class_names"])
    gone = {c for c, o in excluded_organs(table, path).items() if o is None}
    cases = sorted(c for c in table["cases"] if c not in gone)
    contoured = read_partial_labels(path, cases, names)
    jobs = [(path.parent, case, tuple(names), tuple(c for c in contoured[case] if c)) for case in cases]
    facts = dict(zip(cases, parallel_map(_facts_job, jobs, workers, "curation", progress, "case")))
    return {"version": CURATION_VERSION, "rules": asdict(rules), "class_names": names, "excluded_cases": sorted(gone),
            "cases": flag_cases(facts, names, rules)}
