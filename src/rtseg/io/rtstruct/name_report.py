"""The archive-wide ROI name report: every name seen, how often, the class it went to, and for the
names no class took the classes they look closest to, so the alias file can be extended in one pass.

Closeness is judged on :func:`rtseg.io.rtstruct.roi_names.roi_key` (case, separators, side spelling ignored):
a class key contained in the name's key (``Rectum_old`` -> rectum, ``Bladder full`` -> bladder), else
difflib's similarity ratio >= ``MIN_RATIO``. Names that look like planning helpers (PRV, PTV, CTV,
GTV, rings, ``z_``/``opt`` structures, BODY/External, couch) are marked so, because they must stay
unmapped.
"""
from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from rtseg.io.rtstruct.roi_names import roi_key, synonyms

MIN_RATIO = 0.75
HELPER = re.compile(r"(^|[^a-z])(prv|ptv|ctv|gtv|itv|ring|opt|avoid|help|dummy|body|external|skin|couch|table|z)"
                    r"([^a-z]|$)|^z_|^_|^x_|\d+(mm)?$", re.IGNORECASE)


def is_helper(name: str) -> bool:
    """A planning structure (margin, target, ring, body outline, couch), not an organ."""
    return bool(HELPER.search(name.strip().replace(" ", "_")))


def closest_classes(name: str, class_names: Sequence[str], most: int = 2) -> list[dict[str, Any]]:
    """Up to ``most`` classes an unmapped name looks like, best first, with a score in 0..1."""
    key = roi_key(name)
    bare, side = key.partition("/")[0], key.partition("/")[2]
    scores = []
    for cname in class_names[1:]:
        best = 0.0
        for k in synonyms(cname):
            kb, ks = k.partition("/")[0], k.partition("/")[2]
            if ks and side and ks != side:
                continue
            if kb and kb in bare:
                best = max(best, 0.9 + 0.1 * len(kb) / max(len(bare), 1))
            best = max(best, difflib.SequenceMatcher(None, bare, kb).ratio() - (0.2 if ks != side else 0.0))
        if best >= MIN_RATIO:
            scores.append({"class": cname, "score": round(best, 3)})
    return sorted(scores, key=lambda s: -s["score"])[:most]


def name_report(seen: Iterable[Mapping[str, str | None]], class_names: Sequence[str]) -> dict[str, Any]:
    """``seen``: per structure set or case, ROI name -> class (None: unmapped). Returns the report dict."""
    counts: Counter = Counter()
    mapped: dict[str, str | None] = {}
    for table in seen:
        for n, cls in table.items():
            counts[n] += 1
            mapped[n] = mapped.get(n) or cls
    rows = []
    for n in sorted(counts, key=lambda x: (-counts[x], x.lower())):
        row: dict[str, Any] = {"name": n, "count": counts[n], "class": mapped[n]}
        if mapped[n] is None:
            row["helper"] = is_helper(n)
            row["closest"] = closest_classes(n, class_names)
        rows.append(row)
    suggested: dict[str, list[str]] = {}
    for r in rows:
        if r["class"] is None and not r["helper"] and r["closest"]:
            suggested.setdefault(r["closest"][0]["class"], []).append(r["name"])
    return {"names": rows, "suggested_aliases": suggested,
            "classes_without_any_roi": [c for c in class_names[1:] if c not in set(mapped.values())]}


def report_text(report: Mapping[str, Any]) -> str:
    """The report as a table a person reads; the suggested aliases last, ready for --aliases."""
    lines = [f"{'count':>6}  {'ROI name':<32} class"]
    for r in report["names"]:
        if r["class"] is not None:
            what = r["class"]
        else:
            close = ", ".join(f"{c['class']} ({c['score']:.2f})" for c in r["closest"])
            what = "- (planning helper)" if r["helper"] else f"- unmapped{'; closest: ' + close if close else ''}"
        lines.append(f"{r['count']:>6}  {r['name']:<32} {what}")
    if report["classes_without_any_roi"]:
        lines.append("classes no ROI mapped to: " + ", ".join(report["classes_without_any_roi"]))
    return "\n".join(lines) + "\n"
