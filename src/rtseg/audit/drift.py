"""The drift alarm: an organ's rolling median surface Dice has fallen below its commissioning baseline.

Per organ, the cases are put in time order (the approved set's date, then the case UID); the rolling
median of ``surface_dice_2mm`` over the last ``window`` cases is compared with the organ's baseline:
given (a commissioning study's median, e.g. from ``rtseg audit report --baseline``), else the median of
the organ's first ``window`` cases. The alarm is on while the latest rolling median is below
``baseline - margin``; ``since`` names the first case of the run of windows below it. Organs with fewer
than ``window`` cases after the baseline cases are not judged (``n`` says how many there are).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.errors import ConfigError

MEASURE = "surface_dice_2mm"
DEFAULT_WINDOW = 10
DEFAULT_MARGIN = 0.05


@dataclass(frozen=True)
class DriftState:
    organ: str
    n: int
    baseline: float | None
    current: float | None  # the latest rolling median
    alarm: bool
    since: str = ""  # date (or case) of the first window below the threshold, in the current run

    def text(self, margin: float) -> str:
        if self.current is None or self.baseline is None:
            return f"{self.organ}: {self.n} case(s), not enough to judge"
        word = "DRIFT" if self.alarm else "ok"
        return (f"{self.organ}: {word}: rolling median surface Dice (2 mm) {self.current:.3f}, baseline {self.baseline:.3f}"
                f" - margin {margin:.3f}" + (f", below since {self.since}" if self.alarm and self.since else ""))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_params(window: int, margin: float) -> None:
    if window < 1:
        raise ConfigError(f"drift window: expected at least 1 case, got {window}")
    if not 0 <= margin < 1:
        raise ConfigError(f"drift margin: expected a surface Dice difference in [0, 1), got {margin}")


def _series(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[str, str, float]]]:
    by: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for r in rows:
        v = r.get(MEASURE)
        if v in ("", None) or r.get("status") == "added":  # an organ the model did not draw is not its drift
            continue
        by[str(r["organ"])].append((str(r.get("date", "")), str(r["case"]), float(v)))
    return {o: sorted(v) for o, v in by.items()}


def drift_states(rows: Sequence[Mapping[str, Any]], window: int = DEFAULT_WINDOW, margin: float = DEFAULT_MARGIN,
                 baseline: Mapping[str, float] | None = None) -> list[DriftState]:
    """One state per organ (name order), from edit rows (``organ``, ``case``, ``date``, ``surface_dice_2mm``)."""
    check_params(window, margin)
    out = []
    for organ, series in sorted(_series(rows).items()):
        values = np.array([v for _, _, v in series])
        base = None if baseline is None else baseline.get(organ)
        start = 0
        if base is None:
            if len(values) < 2 * window:
                out.append(DriftState(organ, len(values), None, None, False))
                continue
            base, start = float(np.median(values[:window])), window
        if len(values) - start < window:
            out.append(DriftState(organ, len(values), float(base), None, False))
            continue
        medians = [float(np.median(values[i - window + 1:i + 1])) for i in range(start + window - 1, len(values))]
        low = [m < base - margin for m in medians]
        since = ""
        if low[-1]:
            j = len(low) - 1
            while j > 0 and low[j - 1]:
                j -= 1
            first = series[start + window - 1 + j]  # the newest case of the first window below the threshold
            since = first[0] or first[1]
        out.append(DriftState(organ, len(values), float(base), medians[-1], low[-1], since))
    return out


def baseline_from_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """A commissioning baseline: each organ's median surface Dice (2 mm) over a study's rows."""
    return {o: float(np.median([v for _, _, v in s])) for o, s in _series(rows).items()}
