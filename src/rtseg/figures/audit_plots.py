"""Figures of the audit dashboard as inline SVG text: box plots per organ, and a measure over time per model version.

Matplotlib through its object API (``Figure`` + the SVG canvas), imported lazily; rows are plain mappings
(``organ``, ``case``, ``date``, ``model`` and the measures), non-finite values counted, not drawn.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from datetime import datetime
from typing import Any, Mapping, Sequence


def _svg(fig: Any) -> str:
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    FigureCanvasSVG(fig)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG goes inline into HTML


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def box_plot_svg(rows: Sequence[Mapping[str, Any]], measure: str, title: str) -> str:
    """One box per organ of ``measure`` (finite values; the count of non-finite ones under the organ's name)."""
    from matplotlib.figure import Figure

    organs = sorted({str(r["organ"]) for r in rows})
    data = [[float(r[measure]) for r in rows if r["organ"] == o and _finite(r[measure])] for o in organs]
    bad = [sum(1 for r in rows if r["organ"] == o and not _finite(r[measure])) for o in organs]
    fig = Figure(figsize=(max(4.0, 0.9 * len(organs) + 1.5), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.boxplot([d if d else [math.nan] for d in data], showfliers=True)
    ax.set_xticks(range(1, len(organs) + 1),
                  [o + (f"\n({b} inf)" if b else "") + f"\nn={len(d)}" for o, d, b in zip(organs, data, bad)], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _when(r: Mapping[str, Any]) -> datetime | None:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(str(r.get("date", "")), fmt)
        except ValueError:
            continue
    return None


def trend_svg(rows: Sequence[Mapping[str, Any]], measure: str, title: str) -> str:
    """Per case (x: the approved set's date, else arrival order) the mean of ``measure`` over its organs, one
    colour per model version."""
    from matplotlib.figure import Figure

    by_case: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_case[str(r["case"])].append(r)
    points = []
    for i, (case, rs) in enumerate(by_case.items()):
        vals = [float(r[measure]) for r in rs if _finite(r[measure])]
        if vals:
            points.append((_when(rs[0]), i, str(rs[0].get("model") or "unknown"), sum(vals) / len(vals)))
    dated = all(p[0] is not None for p in points)
    fig = Figure(figsize=(7.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    for model in sorted({p[2] for p in points}):
        pts = sorted((p[0] if dated else p[1], p[3]) for p in points if p[2] == model)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=0.8, label=f"model {model}")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("approved on" if dated else "case (arrival order)", fontsize=8)
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=7)
    fig.autofmt_xdate() if dated else None
    return _svg(fig)
