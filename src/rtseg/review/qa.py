"""Per-case QA: measures per organ and flags in words, so a reviewer knows which contours to look at first.

Rules compare the case with the training statistics (:mod:`rtseg.review.organ_stats`); every
rule, its threshold and its weight are listed in docs/PREDICT.md ("Contour QA"). Without
statistics only the rules that need none (cut-off, uncertainty, TTA) run, and ``rules_skipped``
says so: a missing comparison is never reported as a pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from rtseg.review.measures import RAS_AXES, DIRECTION_WORDS, check_grid, input_facts, organ_facts
from rtseg.review.organ_stats import check_stats
from rtseg.review.uncertainty import argmax_agreement, check_probabilities, organ_uncertainty, tta_disagreement

QA_VERSION = 1
#: Flag weights: how much each kind of finding moves a case up the review list.
#: ``input`` flags come from :func:`input_flags`; each organ rule registers its own weight (:func:`organ_rule`).
WEIGHTS: dict[str, int] = {"input": 3}


@dataclass(frozen=True)
class QaRules:
    """Thresholds of the flag rules (defaults documented in docs/PREDICT.md)."""

    volume_margin: float = 0.25         # flag above p99 * (1 + margin) or below p1 * (1 - margin)
    expected_presence: float = 0.5      # 'missing' if the organ was in at least this fraction of training cases
    edge_fraction: float = 0.1          # 'cut off' at an edge fewer than this fraction of training organs touch
    position_sd: float = 4.0            # centroid offset beyond mean +- position_sd * sd ...
    position_min_mm: float = 15.0       # ... and at least this many mm from the mean
    max_boundary_entropy: float = 0.5   # normalised entropy in the boundary band
    max_tta_disagreement: float = 0.2   # 1 - |intersection| / |union| over mirrored passes
    hu_margin: float = 200.0            # HU beyond the training range of the 1st / 99th percentiles
    grid_margin: float = 0.25           # relative margin beyond the training range of spacing and field of view
    band_width: int = 1                 # voxels on each side of the surface


def _flag(kind: str, text: str, organ: str | None = None) -> dict[str, Any]:
    return {"organ": organ, "rule": kind, "weight": WEIGHTS[kind], "text": text}


def _ml(v: float) -> str:
    return f"{v:,.0f} ml" if v >= 100 else f"{v:,.1f} ml"


def _range_text(lo: float, hi: float, unit: str) -> str:
    return f"{lo:,.0f} to {hi:,.0f}{unit}" if unit == " HU" else f"{lo:g} to {hi:g}{unit}"


def input_flags(facts: Mapping[str, Any], stats: Mapping[str, Any], rules: QaRules = QaRules()) -> list[dict[str, Any]]:
    """Flags for a CT unlike the training CTs (intensities, spacing, field of view): checkable before contouring."""
    ref = stats["input"]
    flags = []
    (a, b), (c, d), m = ref["hu_p01"], ref["hu_p99"], rules.hu_margin
    p01, p99 = facts["hu_p01"], facts["hu_p99"]
    if not a - m <= p01 <= b + m:
        flags.append(_flag("input", f"CT 1st intensity percentile {p01:,.0f}, training {a:,.0f} to {b:,.0f}: "
                           + ("no air near -1,000 HU, not a CT in HU?" if p01 > b else "values below any training CT, not HU?")))
    if not c - m <= p99 <= d + m:
        flags.append(_flag("input", f"CT 99th intensity percentile {p99:,.0f}, training {c:,.0f} to {d:,.0f}: "
                           + ("little or no tissue in the scan" if p99 < c else "unusually dense: metal, contrast, or not HU?")))
    for key, word in (("spacing_mm", "voxel spacing"), ("fov_mm", "field of view")):
        for axis, value in enumerate(facts[key]):
            a, b = ref[key]["min"][axis], ref[key]["max"][axis]
            if not a * (1 - rules.grid_margin) <= value <= b * (1 + rules.grid_margin):
                flags.append(_flag("input", f"{word} {value:g} mm along {RAS_AXES[axis]} ({'-'.join(DIRECTION_WORDS[axis])}) "
                                   f"outside training ({_range_text(a, b, ' mm')})"))
    return flags


OrganRule = Callable[[Mapping[str, Any], "Mapping[str, Any] | None", QaRules], list[dict[str, Any]]]
"""A flag rule of one organ: (its measures, its training statistics or None, the thresholds) -> flags."""
ORGAN_RULES: list[OrganRule] = []
"""The organ rules in the order their flags are listed; :func:`organ_rule` adds one."""


def organ_rule(kind: str, weight: int) -> Callable[[OrganRule], OrganRule]:
    """Register an organ flag rule of ``kind`` (its weight in the review order): a new QA flag is one function
    with this decorator (and its line in docs/REVIEW.md)."""
    def register(rule: OrganRule) -> OrganRule:
        if kind in WEIGHTS:
            raise ValueError(f"QA rule {kind!r} is already registered")
        WEIGHTS[kind] = weight
        ORGAN_RULES.append(rule)
        return rule
    return register


def _compared(row: Mapping[str, Any], ref: "Mapping[str, Any] | None") -> bool:
    """The organ is there and training saw it: the rules comparing with training statistics apply."""
    return row["components"] > 0 and ref is not None and "volume_ml" in ref


@organ_rule("missing", 3)
def _missing(row: Mapping[str, Any], ref: "Mapping[str, Any] | None", rules: QaRules) -> list[dict[str, Any]]:
    if row["components"] == 0 and ref is not None and ref["presence"] >= rules.expected_presence:
        return [_flag("missing", f"{row['organ']} missing", row["organ"])]
    return []


@organ_rule("unexpected", 1)
def _unexpected(row: Mapping[str, Any], ref: "Mapping[str, Any] | None", rules: QaRules) -> list[dict[str, Any]]:
    if row["components"] > 0 and ref is not None and "volume_ml" not in ref:
        return [_flag("unexpected", f"{row['organ']} present ({_ml(row['volume_ml'])}) but absent in every training case",
                      row["organ"])]
    return []


@organ_rule("volume", 2)
def _volume_flags(row: Mapping[str, Any], ref: "Mapping[str, Any] | None", rules: QaRules) -> list[dict[str, Any]]:
    if not _compared(row, ref):
        return []
    name, vol, v = row["organ"], row["volume_ml"], ref["volume_ml"]  # type: ignore[index]
    if vol > v["p99"] * (1 + rules.volume_margin):
        return [_flag("volume", f"{name} {_ml(vol)}: above the 99th percentile of training, {_ml(v['p99'])}", name)]
    if vol < v["p1"] * (1 - rules.volume_margin):
        return [_flag("volume", f"{name} {_ml(vol)}: below the 1st percentile of training, {_ml(v['p1'])}", name)]
    return []


@organ_rule("components", 1)
def _components(row: Mapping[str, Any], ref: "Mapping[str, Any] | None", rules: QaRules) -> list[dict[str, Any]]:
    if not _compared(row, ref) or row["components"] <= ref["components"]["max"]:  # type: ignore[index]
        return []
    most = ref["components"]["max"]  # type: ignore[index]
    return [_flag("components", f"{row['organ']} in {row['components']} pieces (training: "
                  f"{'always 1' if most == 1 else f'at most {most}'})", row["organ"])]


@organ_rule("position", 1)
def _position_flags(row: Mapping[str, Any], ref: "Mapping[str, Any] | None", rules: QaRules) -> list[dict[str, Any]]:
    if not _compared(row, ref) or row["centroid_offset_mm"] is None or "centroid_offset_mm" not in ref:  # type: ignore[operator]
        return []
    out = []
    usual = ref["centroid_offset_mm"]  # type: ignore[index]
    for axis, (value, mean, sd) in enumerate(zip(row["centroid_offset_mm"], usual["mean"], usual["sd"])):
        d = value - mean
        if abs(d) > max(rules.position_sd * sd, rules.position_min_mm):
            word = DIRECTION_WORDS[axis][1 if d > 0 else 0]
            out.append(_flag("position", f"{row['organ']} {abs(d):.0f} mm {word} of its usual place relative to the body "
                             f"(training spread {sd:.0f} mm)", row["organ"]))
    return out


@organ_rule("cut_off", 2)
def _cut_off(row: Mapping[str, Any], ref: "Mapping[str, Any] | None", rules: QaRules) -> list[dict[str, Any]]:
    usual = {} if ref is None else ref.get("edge_fraction", {})
    cut = [f for f in row["edges"] if usual.get(f, 0.0) < rules.edge_fraction] if row["components"] > 0 else []
    if not cut:
        return []
    return [_flag("cut_off", f"{row['organ']} touches the scan's {' and '.join(cut)} edge{'s' if len(cut) > 1 else ''}: "
                  "may be cut off", row["organ"])]


@organ_rule("uncertain", 1)
def _uncertain(row: Mapping[str, Any], ref: "Mapping[str, Any] | None", rules: QaRules) -> list[dict[str, Any]]:
    ent = row.get("boundary_entropy")
    if row["components"] == 0 or ent is None or ent <= rules.max_boundary_entropy:
        return []
    return [_flag("uncertain", f"{row['organ']} boundary uncertain: entropy {ent:.2f} (flagged above "
                  f"{rules.max_boundary_entropy:.2f})", row["organ"])]


@organ_rule("tta", 1)
def _tta(row: Mapping[str, Any], ref: "Mapping[str, Any] | None", rules: QaRules) -> list[dict[str, Any]]:
    tta = row.get("tta_disagreement")
    if row["components"] == 0 or tta is None or tta <= rules.max_tta_disagreement:
        return []
    return [_flag("tta", f"{row['organ']}: mirrored TTA passes disagree on {100 * tta:.0f}% of its voxels", row["organ"])]


def organ_flags(row: Mapping[str, Any], stats: Mapping[str, Any] | None, rules: QaRules = QaRules()) -> list[dict[str, Any]]:
    """Flags of one organ's measures (a row of :func:`case_qa`'s ``organs``): every registered rule, in order."""
    ref = None if stats is None else stats["organs"].get(row["organ"])
    return [flag for rule in ORGAN_RULES for flag in rule(row, ref, rules)]


def case_qa(labels: np.ndarray, affine: np.ndarray, class_names: Sequence[str], *, ct: np.ndarray | None = None,
            stats: Mapping[str, Any] | None = None, probabilities: np.ndarray | None = None,
            tta_labels: Sequence[np.ndarray] | None = None, case: str | None = None,
            rules: QaRules = QaRules(), network_labels: np.ndarray | None = None) -> dict[str, Any]:
    """The qa.json of one case: per-organ measures and flags, input checks, totals (JSON-ready).

    ``labels`` and ``ct`` are arrays on one grid with ``affine`` (voxel -> RAS+ mm);
    ``probabilities`` is (n_classes, *labels.shape) softmax; ``tta_labels`` the argmax labels of
    each mirrored pass; ``network_labels`` the network's own argmax before post-processing, when the
    caller has it (the argmax agreement is then a comparison of two label arrays, not an argmax of
    the probabilities: the same voxels, a tenth of the time).
    """
    labels, affine = check_grid(labels, affine)
    stats = None if stats is None else check_stats(stats)
    rows = organ_facts(labels, affine, class_names, ct)
    out: dict[str, Any] = {"qa_version": QA_VERSION, "case": case, "class_names": list(class_names),
                           "shape": list(labels.shape), "rules": asdict(rules), "rules_skipped": []}
    if probabilities is not None:
        prob = check_probabilities(probabilities, labels.shape, len(class_names))
        agreement = (argmax_agreement(prob, labels) if network_labels is None
                     else float(np.count_nonzero(network_labels == labels)) / max(1, labels.size))
        out["argmax_agreement"] = round(agreement, 5)
        boxes = ndimage.find_objects(labels if np.issubdtype(labels.dtype, np.integer) else labels.astype(np.int32))
        for r in rows:
            box = boxes[r["label"] - 1] if r["label"] - 1 < len(boxes) else None
            r.update(organ_uncertainty(prob, labels, r["label"], box, rules.band_width))
    else:
        out["rules_skipped"].append("uncertain (no probabilities)")
    for r in rows:
        r["tta_disagreement"] = None if tta_labels is None else tta_disagreement(tta_labels, r["label"])
    if tta_labels is None:
        out["rules_skipped"].append("tta (no TTA passes)")
    flags: list[dict[str, Any]] = []
    if ct is not None:
        out["input"] = input_facts(ct, affine)
        if stats is not None:
            flags += input_flags(out["input"], stats, rules)
    if stats is None:
        out["rules_skipped"].append("input, missing, volume, components, position (no training statistics)")
    for r in rows:
        r["flags"] = organ_flags(r, stats, rules)
        flags += r["flags"]
    out["organs"] = rows
    out.update(flags=flags, n_flags=len(flags), flag_weight=sum(f["weight"] for f in flags))
    return out


def sort_cases(qas: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Cases to review first: highest total flag weight, then most flags, then case name."""
    return sorted(qas, key=lambda q: (-q["flag_weight"], -q["n_flags"], str(q.get("case"))))


def summary_columns(qa: Mapping[str, Any]) -> dict[str, Any]:
    """The QA columns of the batch summary for one case."""
    return {"n_flags": qa["n_flags"], "flag_weight": qa["flag_weight"], "flags": "; ".join(f["text"] for f in qa["flags"])}


def organs_for_review(qa: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Organ rows with flagged organs first (heaviest first), the rest in label order."""
    return sorted(qa["organs"], key=lambda r: (-sum(f["weight"] for f in r["flags"]), r["label"]))
