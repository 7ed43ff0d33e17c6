"""Routing: the first rule whose conditions all hold chooses the checkpoint and the destinations."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from rtseg.serve.config import Rule
from rtseg.serve.destinations import CALLER, Destination, parse_destination
from rtseg.serve.dicom_destination import DicomDestination


@dataclass(frozen=True)
class SeriesAttributes:
    """What rules may look at (from the series' first instance and its association)."""

    calling_ae: str
    modality: str
    body_part: str
    series_description: str


def _one_of(value: str, allowed: Optional[Sequence[str]], fold: bool = False) -> bool:
    if allowed is None:
        return True
    if fold:
        return value.strip().upper() in {a.strip().upper() for a in allowed}
    return value.strip() in {a.strip() for a in allowed}


def matches(rule: Rule, series: SeriesAttributes) -> bool:
    m = rule.match
    return (_one_of(series.calling_ae, m.calling_ae)
            and _one_of(series.modality, m.modality, fold=True)
            and _one_of(series.body_part, m.body_part, fold=True)
            and (m.series_description is None or re.search(m.series_description, series.series_description) is not None))


def route(rules: Sequence[Rule], series: SeriesAttributes) -> Optional[Rule]:
    """The first matching rule, or None (the series is kept and reported, not contoured)."""
    return next((r for r in rules if matches(r, series)), None)


def resolve_destinations(rule: Rule, calling_ae: str, peer_host: str, caller_port: Optional[int]) -> list[Destination]:
    """The rule's destinations with ``caller`` replaced by the calling AE at its own address."""
    out = []
    for d in rule.destinations:
        if d == CALLER:
            assert caller_port is not None  # the config validator requires it
            out.append(DicomDestination(calling_ae, peer_host, caller_port))
        else:
            out.append(parse_destination(d))
    return out
