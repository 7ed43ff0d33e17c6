"""The QA gate of ``rtseg predict`` and ``rtseg serve``: each kind of QA flag maps to one action.

Actions (docs/REVIEW.md "QA gate" has the table): ``deliver`` (no flag), ``deliver with flags``
(the outputs carry the flags: RTSTRUCT StructureSetDescription and ROIObservationDescription, SEG
SegmentDescription, qa.json, summary.csv, ``serve status``), ``hold`` (nothing reaches the
planning system until a person releases it: ``rtseg serve release JOB``; predict writes the
case's RTSTRUCT/SEG under ``OUTPUT/held/`` and exits 1), ``refuse`` (the case fails, nothing is
written). A case takes the strictest action of its flags.

``clinical`` (the default) holds a case whose registration to the patient's plan is doubtful
(``registration``, ``rtseg adapt``) or whose input is unlike the training CTs (the ``input``
flags: intensities, voxel spacing or field of view beyond the training range by the
:class:`~rtseg.review.qa.QaRules` margins; a wrong body region shows there as a field of view and
organs far from the training ones, a wrong modality is refused earlier by the DICOM reader) and
delivers organ-level flags attached. ``research`` delivers everything, with its flags.
A checkpoint without training statistics (trained before rtseg recorded them) cannot be compared:
its cases are delivered with the note ``no_statistics`` in their outputs, and the start of the run
warns.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from rtseg.errors import ConfigError
from rtseg.inference.bundle import InferenceBundle
from rtseg.inference.verdict import ACTIONS, CaseNotes, Verdict
from rtseg.io.volume import Volume
from rtseg.review.measures import input_facts
from rtseg.review.organ_stats import check_stats
from rtseg.review.qa import WEIGHTS, QaRules, input_flags

DEFAULT_POLICY = "clinical"
NO_STATISTICS = "no_statistics"
#: ``rtseg adapt``'s flag for a doubtful registration of the plan (is this fraction the same patient?)
REGISTRATION = "registration"
#: Per policy: flag kind -> action; ``*`` is every other kind (organ rules registered later included).
POLICIES: dict[str, dict[str, str]] = {
    "clinical": {"input": "hold", REGISTRATION: "hold", "*": "deliver with flags"},
    "research": {"*": "deliver with flags"},
}
POLICY_HELP = ("QA gate: clinical (default) holds cases whose CT is unlike the training CTs (intensities, spacing, "
               "field of view) and delivers organ-level flags attached; research delivers everything with its flags "
               "(docs/REVIEW.md, 'QA gate')")
_SEVERITY = {a: i for i, a in enumerate(ACTIONS)}


def check_policy(name: str, what: str = "qa_policy") -> str:
    if name not in POLICIES:
        raise ConfigError(f"{what} {name!r}: expected one of {', '.join(POLICIES)}")
    return name


def action_of(kind: str, policy: str = DEFAULT_POLICY) -> str:
    """The policy's action for one kind of flag."""
    table = POLICIES[check_policy(policy)]
    return table.get(kind, table["*"])


def policy_table() -> list[tuple[str, dict[str, str]]]:
    """(flag kind, action per policy) for every registered kind: what docs/REVIEW.md lists."""
    kinds = [*WEIGHTS, REGISTRATION, NO_STATISTICS]
    return [(k, {p: action_of(k, p) for p in POLICIES}) for k in kinds]


def notes_of(flags: Sequence[Mapping[str, Any]], action: str) -> CaseNotes:
    """The texts the DICOM outputs carry: the case's action and flags, and each organ's own flags."""
    organs: dict[str, list[str]] = {}
    for f in flags:
        if f.get("organ"):
            organs.setdefault(str(f["organ"]), []).append(str(f["text"]))
    if not flags:
        return CaseNotes("rtseg QA: no flags; automatic contours, to be reviewed")
    summary = f"rtseg QA: {len(flags)} flag(s), {action}: " + "; ".join(str(f["text"]) for f in flags)
    return CaseNotes(summary, {k: "rtseg QA: " + "; ".join(v) for k, v in organs.items()})


class QaGate:
    """The gate of one run: the policy and the checkpoint's training statistics (for its own input checks)."""

    def __init__(self, bundle: InferenceBundle, policy: str = DEFAULT_POLICY, rules: QaRules = QaRules()) -> None:
        self.policy = check_policy(policy)
        self.rules = rules
        raw = bundle.organ_stats
        self.stats = None if raw is None else check_stats(raw, "checkpoint plan.organ_stats")

    def flags(self, volume: Volume, qa: Optional[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The case's flags: its QA's, or (no QA run) the input checks, which need no prediction."""
        if qa is not None:
            return list(qa["flags"])
        if self.stats is None:
            return []
        return list(input_flags(input_facts(volume.array, volume.affine), self.stats, self.rules))

    def __call__(self, case: str, volume: Volume, qa: Optional[Mapping[str, Any]]) -> Verdict:
        """The strictest action of the case's flags (none: deliver)."""
        flags = self.flags(volume, qa)
        noted = list(flags)
        if self.stats is None:
            noted.append({"organ": None, "rule": NO_STATISTICS, "weight": 0, "text": "not compared with training "
                          "(the checkpoint holds no training statistics)"})
        action = "deliver"
        reasons: list[str] = []
        for f in noted:
            a = action_of(str(f["rule"]), self.policy)
            if _SEVERITY[a] > _SEVERITY[action]:
                action, reasons = a, []
            if a == action and a in ("hold", "refuse"):
                reasons.append(str(f["text"]))
        return Verdict(action, tuple(reasons), notes_of(noted, action), tuple(flags), self.policy)  # type: ignore[arg-type]
