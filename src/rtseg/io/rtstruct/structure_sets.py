"""Several structure sets on one CT: which set each organ is taken from, and the label volume they give.

The rule (docs/CLINICAL_IO.md, "Several structure sets"): for each requested organ, among the
structure sets that refer to this CT and hold a non-empty ROI mapped to the organ, take the one
ranked first by

1. ApprovalStatus APPROVED before any other (UNAPPROVED or none); REJECTED sets are never used;
2. then the most recent StructureSetDate + StructureSetTime (a set without a date ranks last);
3. then the SOP Instance UID in ascending order (a stable, arbitrary tie-break, reported as such).

Two different organs are never merged into one label (where two organs overlap the higher label wins
and the voxels are counted); several ROIs of one set mapped to one organ are united, their names and ROI
numbers recorded and a note added (a warning where two share one name: more likely a second drawing). Which set (SOP Instance UID, label) and ROI names each organ came from goes into the case
record, with the other sets that also held it. A set drawn on another scan is refused with its reason
and the others are still used.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.errors import DataError
from rtseg.io.rtstruct.roi_names import match_roi_names
from rtseg.io.rtstruct.read import RtStruct, check_reference, merge_class_masks, note_united, rasterize_roi, RoiMappingReport
from rtseg.io.volume import Volume


@dataclass(frozen=True)
class SetHeader:
    """What the rule needs from a structure set's header."""

    sop_uid: str
    label: str
    approval: str
    date: str
    time: str

    def rank(self) -> tuple[int, str]:
        """Larger is preferred: (approved, YYYYMMDDHHMMSS.ffffff or '')."""
        date = _DIGITS.sub("", self.date)[:8]
        time = self.time.split(".")[0].replace(":", "")[:6]
        return int(self.approval == "APPROVED"), (date + time.ljust(6, "0")) if date else ""

    def describe(self) -> dict[str, str]:
        return {"sop_instance_uid": self.sop_uid, "label": self.label, "approval": self.approval or "none",
                "date": self.date, "time": self.time}


_DIGITS = re.compile(r"\D")

def ranked(sets: Sequence[tuple[SetHeader, RtStruct]]) -> list[tuple[SetHeader, RtStruct]]:
    """Sets in the rule's order: approved first, then most recent, then by SOP Instance UID."""
    by_uid = sorted(sets, key=lambda s: s[0].sop_uid)
    return sorted(by_uid, key=lambda s: s[0].rank(), reverse=True)  # stable: equal ranks keep UID order


@dataclass
class CaseLabels:
    """Labels of one CT from its structure sets, with where each organ came from."""

    labels: Volume
    contoured: list[str]
    organs: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused_sets: list[dict[str, str]] = field(default_factory=list)
    roi_names: dict[str, str | None] = field(default_factory=dict)  # every ROI name seen -> class or None
    notes: list[str] = field(default_factory=list)


def _organ_rois(rs: RtStruct, mapping: Mapping[str, str], organ: str) -> list:
    return [r for r in rs.rois if mapping.get(r.name) == organ and r.contours]


def labels_from_sets(ct: Volume, sets: Sequence[tuple[SetHeader, RtStruct]], class_names: Sequence[str],
                     aliases: Mapping[str, Sequence[str]] | None = None) -> CaseLabels:
    """The label volume of ``ct`` from all its structure sets by the module's rule."""
    usable: list[tuple[SetHeader, RtStruct, dict[str, str]]] = []
    refused, names_seen = [], {}
    for head, rs in ranked(sets):
        mapping = match_roi_names(rs.roi_names, class_names, aliases)
        for n in rs.roi_names:
            names_seen[n] = mapping.get(n)
        if head.approval == "REJECTED":
            refused.append({**head.describe(), "reason": "ApprovalStatus REJECTED"})
            continue
        try:
            check_reference(rs, ct, [r for r in rs.rois if r.name in mapping])
        except DataError as exc:
            refused.append({**head.describe(), "reason": str(exc).replace(str(rs.path), rs.path.name)})
            continue
        usable.append((head, rs, mapping))
    if not usable:
        why = "; ".join(r["reason"] for r in refused) or "none refers to it"
        raise DataError(f"no usable structure set for this CT: {why}")
    report = RoiMappingReport()
    organs: dict[str, dict[str, Any]] = {}
    united: dict[str, str] = {}
    skipped = 0

    def class_mask(organ: str) -> np.ndarray | None:
        nonlocal skipped
        holders = [(h, rs, _organ_rois(rs, m, organ)) for h, rs, m in usable]
        holders = [x for x in holders if x[2]]
        for i, (head, rs, rois) in enumerate(holders):
            mask = np.zeros(ct.shape, dtype=bool)
            for r in rois:
                m, bad = rasterize_roi(r, ct)
                mask |= m
                skipped += bad
            if mask.any():
                others = [{**h.describe(), "roi_names": [r.name for r in rr]} for h, _, rr in holders if h is not head]
                tie = any(h.rank() == head.rank() for h, _, _ in holders if h is not head)
                organs[organ] = {"structure_set": head.describe(), "roi_names": [r.name for r in rois],
                                 "roi_numbers": [r.number for r in rois], "also_in": others, "tie_broken_by_uid": tie}
                if len(rois) > 1:
                    united[organ] = f"{organ} united from {len(rois)} ROIs of set {head.label or head.sop_uid}: " \
                                    + ", ".join(note_united(rs, organ, rois))
                return mask
        return None

    labels = merge_class_masks(ct.shape, class_names, class_mask, report)
    notes = []
    if report.empty_classes:
        notes.append(f"ROIs mapped but empty on this CT: {', '.join(report.empty_classes)}")
    if skipped:
        notes.append(f"{skipped} contours skipped (open, off-grid or not in a slice plane)")
    if report.overlap_voxels:
        notes.append(f"{report.overlap_voxels} voxels in two organs (higher label kept)")
    notes.extend(united.values())
    meta = {k: v for k, v in ct.meta.items() if k != "dicom"}
    return CaseLabels(Volume(labels, ct.affine.copy(), meta), [n for n in class_names[1:] if n in organs], organs,
                      refused, names_seen, notes)
