"""``rtseg audit compare``: edit measures of every paired case, one ``edits.csv`` row per case and organ.

Columns (docs/AUDIT.md): ``case`` (the CT's SeriesInstanceUID), ``organ`` (TG-263 name), ``status``
(unchanged, edited, deleted, added), ``dice``, ``surface_dice_2mm``, ``apl_mm``, ``hd95_mm``,
``volume_ratio``, then ``surface_dice_1mm``, ``surface_dice_3mm``, ``apl_pct``, the volumes, the ROI
names on each side (a rename shows as two different names), the approved set's ``date`` and approval,
and the ``model`` version the auto set names. ``pairing.json`` lists the cases and every file that
could not be paired or measured, with the reason.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.audit.pairing import CasePair, PairData, compared_keys, display_name, pair_folders, read_pair
from rtseg.errors import DataError, RtsegError
from rtseg.evaluation.edits import edit_measures
from rtseg.io.atomic import atomic_path
from rtseg.io.jsonfile import write_json
from rtseg.io.rtstruct.provenance import set_provenance

CSV_NAME = "edits.csv"
PAIRING_NAME = "pairing.json"
COLUMNS = ("case", "organ", "status", "dice", "surface_dice_2mm", "apl_mm", "hd95_mm", "volume_ratio",
           "surface_dice_1mm", "surface_dice_3mm", "apl_pct", "vol_auto_ml", "vol_approved_ml",
           "auto_roi", "approved_roi", "date", "approval", "model")
NUMERIC = ("dice", "surface_dice_2mm", "apl_mm", "hd95_mm", "volume_ratio", "surface_dice_1mm", "surface_dice_3mm",
           "apl_pct", "vol_auto_ml", "vol_approved_ml")


def pair_rows(data: PairData, case: str, approved: Mapping[str, str], auto: Mapping[str, str]) -> list[dict[str, Any]]:
    """The edit rows of one read pair (organs in name order)."""
    spacing = data.ct.spacing
    empty = np.zeros(data.ct.shape, dtype=bool)
    rows = []
    for key in compared_keys(data.auto_organs, data.approved_organs):
        a, b = data.auto_organs.get(key), data.approved_organs.get(key)
        names = (a or b)[1]  # type: ignore[index]
        m = edit_measures(a[0] if a else empty, b[0] if b else empty, spacing)
        rows.append({"case": case, "organ": display_name(key, names), **m,
                     "auto_roi": ";".join(a[1]) if a else "", "approved_roi": ";".join(b[1]) if b else "",
                     "date": approved.get("date", ""), "approval": approved.get("approval", ""),
                     "model": auto.get("model", "")})
    return sorted(rows, key=lambda r: r["organ"])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else ("nan" if math.isnan(v) else f"{v:.6g}")
    return str(v)


def write_edits_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for r in rows:
                w.writerow([_fmt(r.get(c, "")) for c in COLUMNS])
    return path


def read_edits_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an edits.csv with numbers as floats; a file without the audit's columns is a DataError."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: edits CSV not found (write one with 'rtseg audit compare')")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS[:8] if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{p}: not an edits CSV: columns {missing} missing (found {reader.fieldnames})")
        rows = []
        for i, r in enumerate(reader, start=2):
            try:
                rows.append({k: (float(v) if k in NUMERIC and v != "" else v) for k, v in r.items()})
            except ValueError:
                raise DataError(f"{p}: line {i}: a measure is not a number") from None
    return rows


@dataclass
class CompareResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)


def measure_pair(pair: CasePair, aliases: Mapping[str, Sequence[str]] | None = None
                 ) -> tuple[list[dict[str, Any]], dict[str, Any], PairData]:
    data = read_pair(pair, aliases)
    auto, approved = set_provenance(pair.auto.path), set_provenance(pair.approved.path)
    rows = pair_rows(data, pair.series_uid, approved, auto)
    case = {"case": pair.series_uid, "auto": str(pair.auto.path), "approved": str(pair.approved.path),
            "approval": approved["approval"], "label": approved["label"], "date": approved["date"],
            "model": auto["model"], "organs": [r["organ"] for r in rows if r["approved_roi"]]}
    return rows, case, data


def compare_folders(auto_dir: str | Path, approved_dir: str | Path, out_dir: str | Path,
                    aliases: Mapping[str, Sequence[str]] | None = None, review_pages: int = 5) -> CompareResult:
    """Pair, measure and write ``edits.csv``, ``pairing.json`` and review pages of the ``review_pages`` most edited cases."""
    from rtseg.audit.pages import write_review_pages

    pairing = pair_folders(auto_dir, approved_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = CompareResult(unmatched=pairing.unmatched)
    for pair in pairing.pairs:
        try:
            rows, case, _ = measure_pair(pair, aliases)
        except RtsegError as exc:
            res.failed.append((pair.series_uid, str(exc)))
            continue
        res.rows += rows
        res.cases.append(case)
    if not res.rows:
        raise DataError(f"no case could be measured: {res.failed[0][1] if res.failed else 'no organs'}")
    res.outputs["edits_csv"] = str(write_edits_csv(res.rows, out / CSV_NAME))
    pages = write_review_pages([p for p in pairing.pairs if p.series_uid in {c["case"] for c in res.cases}],
                               res.rows, out, review_pages, aliases)
    for c in res.cases:
        if c["case"] in pages:
            c["review_page"] = pages[c["case"]]
    write_json({"cases": res.cases, "unmatched": [list(u) for u in res.unmatched],
                "failed": [list(f) for f in res.failed]}, out / PAIRING_NAME)
    res.outputs["pairing"] = str(out / PAIRING_NAME)
    return res
