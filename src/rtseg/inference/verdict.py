"""What the pipeline needs of a QA gate (``rtseg.review.gate`` sits above this package): a verdict per case.

A verdict is one action (``deliver``, ``deliver with flags``, ``hold``, ``refuse``; docs/REVIEW.md
"QA gate"), the flags that decided it, and the notes the case's DICOM outputs carry (the case's
flags in the RTSTRUCT StructureSetDescription / SEG ContentDescription, each organ's in its
ROIObservationDescription / SegmentDescription). ``rtseg predict`` writes a held case's RTSTRUCT and
SEG under ``OUTPUT/held/`` (where no TPS import looks) and marks it ``held``; ``rtseg serve`` keeps
a held job's files in its outbox until a person releases or rejects it; a refused case fails.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Protocol

from rtseg.io.volume import Volume

Action = Literal["deliver", "deliver with flags", "hold", "refuse"]
ACTIONS: tuple[str, ...] = ("deliver", "deliver with flags", "hold", "refuse")
HELD_DIR = "held"  # predict: a held case's RTSTRUCT/SEG go to OUTPUT/held/


@dataclass(frozen=True)
class CaseNotes:
    """What a case's DICOM outputs say about its QA: the whole case, and per organ (by class name)."""

    summary: str = ""
    organs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: tuple[str, ...] = ()  # the flags that made it hold or refuse
    notes: CaseNotes = field(default_factory=CaseNotes)
    flags: tuple[Mapping[str, Any], ...] = ()  # every flag of the case (the gate saw them all)
    policy: str = ""

    @property
    def held(self) -> bool:
        return self.action == "hold"

    @property
    def refused(self) -> bool:
        return self.action == "refuse"

    def to_dict(self) -> dict[str, Any]:
        """What qa.json and the node's database keep of it."""
        return {"policy": self.policy, "action": self.action, "reasons": list(self.reasons)}


DELIVER = Verdict("deliver")


class CaseGate(Protocol):
    """A QA gate: the case's QA (``None`` without a review: the gate runs its own input checks) -> verdict."""

    def __call__(self, case: str, volume: Volume, qa: Optional[Mapping[str, Any]]) -> Verdict: ...
