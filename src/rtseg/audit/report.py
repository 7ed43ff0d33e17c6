"""``rtseg audit report``: edits.csv files -> a per-organ table, ``summary.csv``, ``drift.json`` and ``dashboard.html``.

The dashboard is one self-contained HTML file (inline SVG figures, no script, no network): the drift
alarm, the per-organ table, box plots per organ, surface Dice over time per model version, and the
largest edits linked to the review pages ``rtseg audit compare`` wrote (auto and approved together).
"""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.audit.compare import PAIRING_NAME, STATUSES_ORDER, read_edits_csv
from rtseg.audit.drift import DEFAULT_MARGIN, DEFAULT_WINDOW, DriftState, baseline_from_rows, drift_states
from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.jsonfile import read_json, write_json

SUMMARY_NAME = "summary.csv"
DRIFT_NAME = "drift.json"
DASHBOARD_NAME = "dashboard.html"
MEDIANS = (("dice", "Dice", "{:.3f}"), ("surface_dice_1mm", "sDSC 1mm", "{:.3f}"), ("surface_dice_2mm", "sDSC 2mm", "{:.3f}"),
           ("surface_dice_3mm", "sDSC 3mm", "{:.3f}"), ("apl_mm", "APL mm", "{:.0f}"), ("apl_pct", "APL %", "{:.1f}"),
           ("hd95_mm", "HD95 mm", "{:.1f}"), ("volume_ratio", "vol. ratio", "{:.3f}"))


def _median(values: Sequence[Any]) -> float | None:
    ok = [float(v) for v in values if v not in ("", None) and np.isfinite(float(v))]
    return float(np.median(ok)) if ok else None


def organ_summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per organ: case count, count per status, and the median of every measure (finite values)."""
    by: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by[str(r["organ"])].append(r)
    out = []
    for organ, rs in sorted(by.items()):
        s: dict[str, Any] = {"organ": organ, "n": len(rs)}
        s.update({st: sum(1 for r in rs if r["status"] == st) for st in STATUSES_ORDER})
        s.update({k: _median([r.get(k) for r in rs]) for k, _, _ in MEDIANS})
        out.append(s)
    return out


def format_table(summary: Sequence[Mapping[str, Any]]) -> str:
    head = ["organ", "n", *STATUSES_ORDER, *(t for _, t, _ in MEDIANS)]
    body = [[s["organ"], str(s["n"]), *(str(s[st]) for st in STATUSES_ORDER),
             *("-" if s[k] is None else f.format(s[k]) for k, _, f in MEDIANS)] for s in summary]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + body)


def _write_summary_csv(summary: Sequence[Mapping[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(summary[0]))
            w.writeheader()
            w.writerows({k: ("" if v is None else v) for k, v in s.items()} for s in summary)


def _review_pages(edits: Sequence[Path], out: Path) -> dict[str, str]:
    """case -> review page path relative to ``out`` (from the pairing.json beside each edits.csv)."""
    pages = {}
    for e in edits:
        p = e.parent / PAIRING_NAME
        if p.is_file():
            for c in read_json(p, "audit pairing").get("cases", []):
                if c.get("review_page"):
                    pages[c["case"]] = os.path.relpath(e.parent / c["review_page"], out)
    return pages


@dataclass
class AuditReport:
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    drift: list[DriftState]
    table: str
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def alarms(self) -> list[DriftState]:
        return [d for d in self.drift if d.alarm]


def load_baseline(path: str | Path) -> dict[str, float]:
    """A baseline file: ``{organ: median surface Dice}`` JSON (a report's ``drift.json`` ``baseline_of_this_study``
    works), or a commissioning study's edits.csv."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        return baseline_from_rows(read_edits_csv(p))
    data = read_json(p, "drift baseline")
    data = data.get("baseline_of_this_study", data) if isinstance(data, dict) else data
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise DataError(f"{p}: expected a JSON mapping of organ -> median surface Dice (2 mm), e.g. {{\"Bladder\": 0.95}}")
    return {str(k): float(v) for k, v in data.items()}


def build_report(edits: Sequence[str | Path], out_dir: str | Path, *, window: int = DEFAULT_WINDOW,
                 margin: float = DEFAULT_MARGIN, baseline: Mapping[str, float] | None = None,
                 largest: int = 10) -> AuditReport:
    """Read the edits CSVs (a folder stands for its edits.csv), write the report files into ``out_dir``."""
    from rtseg.audit.dashboard import dashboard_html

    paths = [Path(e) / "edits.csv" if Path(e).is_dir() else Path(e) for e in edits]
    rows = [r for p in paths for r in read_edits_csv(p)]
    if not rows:
        raise DataError(f"{', '.join(map(str, paths))}: no edit rows to report")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = organ_summary(rows)
    drift = drift_states(rows, window, margin, baseline)
    rep = AuditReport(rows, summary, drift, format_table(summary))
    _write_summary_csv(summary, out / SUMMARY_NAME)
    write_json({"window": window, "margin": margin, "measure": "surface_dice_2mm",
                "baseline_given": baseline is not None, "organs": [d.as_dict() for d in drift],
                "baseline_of_this_study": baseline_from_rows(rows)}, out / DRIFT_NAME)
    page = dashboard_html(rep, _review_pages(paths, out), window, margin, largest)
    with atomic_path(out / DASHBOARD_NAME) as tmp:
        tmp.write_text(page, encoding="utf-8")
    rep.outputs = {"summary_csv": str(out / SUMMARY_NAME), "drift": str(out / DRIFT_NAME),
                   "dashboard": str(out / DASHBOARD_NAME)}
    return rep

