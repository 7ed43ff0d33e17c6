"""The per-organ summary of edit rows: counts per status and the median of every measure."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.audit.drift import DriftState
from rtseg.evaluation.edits import STATUSES as STATUSES_ORDER

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


