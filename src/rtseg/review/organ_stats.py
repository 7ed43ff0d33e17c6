"""What normal looks like per organ in the training data, as a JSON-ready dict stored in the plan/checkpoint.

Training calls :func:`case_facts` once per training case (it needs the labels, the affine and
the CT) and :func:`summarize` once at the end; QA (:mod:`rtseg.review.qa`) compares a new case
with that summary. Only summaries are kept (percentiles, counts), never per-case values, so the
dict stays small and holds nothing that identifies a patient.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from rtseg.errors import DataError
from rtseg.review.measures import input_facts, organ_facts

STATS_VERSION = 1
#: Volume percentiles kept per organ (the QA rules use 1 and 99).
VOLUME_PERCENTILES: tuple[float, ...] = (1.0, 5.0, 50.0, 95.0, 99.0)


def case_facts(labels: np.ndarray, affine: np.ndarray, class_names: Sequence[str], ct: np.ndarray,
               classes_present: Iterable[int] | None = None) -> dict[str, Any]:
    """One training case's facts: per organ (only those contoured, see ``classes_present``) and of the CT."""
    present = None if classes_present is None else set(int(c) for c in classes_present)
    organs = [r for r in organ_facts(labels, affine, class_names, ct) if present is None or r["label"] in present]
    return {"organs": organs, "input": input_facts(ct, affine)}


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    out = {f"p{int(q) if float(q).is_integer() else q}": round(float(np.percentile(arr, q)), 3) for q in VOLUME_PERCENTILES}
    out.update(min=round(float(arr.min()), 3), max=round(float(arr.max()), 3))
    return out


def _organ_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    present = [r for r in rows if r["components"] > 0]
    out: dict[str, Any] = {"n_cases": len(rows), "presence": round(len(present) / len(rows), 4)}
    if not present:
        return out
    out["volume_ml"] = _percentiles([r["volume_ml"] for r in present])
    comps = np.asarray([r["components"] for r in present])
    out["components"] = {"max": int(comps.max()), "p50": float(np.median(comps))}
    faces: dict[str, int] = {}
    for r in present:
        for f in r["edges"]:
            faces[f] = faces.get(f, 0) + 1
    out["edge_fraction"] = {f: round(n / len(present), 4) for f, n in sorted(faces.items())}
    offsets = np.asarray([r["centroid_offset_mm"] for r in present if r["centroid_offset_mm"] is not None], dtype=np.float64)
    if len(offsets):
        out["centroid_offset_mm"] = {"mean": [round(float(v), 2) for v in offsets.mean(axis=0)],
                                     "sd": [round(float(v), 2) for v in offsets.std(axis=0)]}
    return out


def _input_summary(inputs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def rng(key: str) -> list[float]:
        v = np.asarray([i[key] for i in inputs], dtype=np.float64)
        return [round(float(v.min()), 2), round(float(v.max()), 2)]

    def per_axis(key: str) -> dict[str, list[float]]:
        v = np.asarray([i[key] for i in inputs], dtype=np.float64)
        return {"min": [round(float(x), 4) for x in v.min(axis=0)], "max": [round(float(x), 4) for x in v.max(axis=0)]}

    return {"hu_p01": rng("hu_p01"), "hu_p99": rng("hu_p99"), "spacing_mm": per_axis("spacing_mm"), "fov_mm": per_axis("fov_mm")}


def summarize(facts: Sequence[Mapping[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """The statistics dict (JSON-ready) from the training cases' :func:`case_facts`."""
    if not facts:
        raise DataError("organ statistics need at least one training case, got none")
    organs: dict[str, Any] = {}
    for name in class_names[1:]:
        rows = [r for f in facts for r in f["organs"] if r["organ"] == name]
        if rows:
            organs[name] = _organ_summary(rows)
    return {"version": STATS_VERSION, "n_cases": len(facts), "class_names": list(class_names),
            "organs": organs, "input": _input_summary([f["input"] for f in facts])}


def compute_stats(cases: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], class_names: Sequence[str]) -> dict[str, Any]:
    """Convenience: statistics of ``(ct, labels, affine)`` triples (all organs contoured)."""
    return summarize([case_facts(lab, aff, class_names, ct) for ct, lab, aff in cases], class_names)


def check_stats(stats: Any, what: str = "organ statistics") -> dict[str, Any]:
    """A stats dict as :func:`summarize` writes it, or one clear error (e.g. an older plan without them)."""
    if isinstance(stats, Mapping) and "organ_stats" in stats:  # a whole plan was passed
        stats = stats["organ_stats"]
    if not isinstance(stats, Mapping) or stats.get("version") != STATS_VERSION or "organs" not in stats or "input" not in stats:
        raise DataError(f"{what}: not rtseg organ statistics (expected keys version={STATS_VERSION}, organs, input)")
    return dict(stats)
