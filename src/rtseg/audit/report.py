"""``rtseg audit report``: edits.csv files -> a per-organ table, ``summary.csv``, ``drift.json`` and ``dashboard.html``.

The dashboard is one self-contained HTML file (inline SVG figures, no script, no network): the drift
alarm, the per-organ table, box plots per organ, surface Dice over time per model version, and the
largest edits linked to the review pages ``rtseg audit compare`` wrote (auto and approved together).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping, Sequence


from rtseg.audit.compare import PAIRING_NAME, read_edits_csv
from rtseg.audit.drift import DEFAULT_MARGIN, DEFAULT_WINDOW, baseline_from_rows, drift_states
from rtseg.audit.summary import AuditReport, format_table, organ_summary
from rtseg.audit.dashboard import dashboard_html
from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.jsonfile import read_json, write_json

SUMMARY_NAME = "summary.csv"
DRIFT_NAME = "drift.json"
DASHBOARD_NAME = "dashboard.html"
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

