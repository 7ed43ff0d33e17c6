"""Auto and approved structure sets paired by the CT series they reference, and their organs on the CT grid.

Both folders are scanned like an archive import (any layout, :mod:`rtseg.io.archive.scan`); the CT
series may sit in either folder (or both: instances are taken once by SOP Instance UID). An RTSTRUCT
is paired by the SeriesInstanceUID it references; where a side holds several sets for one CT, the
several-set rule picks one (approved first, then the most recent: :func:`rtseg.io.rtstruct.structure_sets.ranked`).
Organs are matched by name through the ROI name mapping (TG-263 names, synonyms, ``aliases``), so a
renamed ROI ("Rect" for "Rectum") is the same organ; an ROI no class accepts is matched to the other
set's ROI of the same :func:`roi_key`. Unpaired sets and CTs without both sides are reported, never
silently dropped.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.errors import DataError
from rtseg.io.archive.scan import DicomFile, archive_files, read_headers
from rtseg.io.dicom.series import read_dicom_files
from rtseg.io.rtstruct.read import RtStruct, check_reference, rasterize_roi, read_rtstruct
from rtseg.io.rtstruct.roi_names import TG263, match_roi_names, roi_key, tg263_entry
from rtseg.io.rtstruct.structure_sets import SetHeader, ranked
from rtseg.io.volume import Volume

KNOWN_CLASSES = ("background", *TG263)


@dataclass(frozen=True)
class CasePair:
    """One CT series with its chosen auto and approved structure sets."""

    series_uid: str
    ct_files: tuple[Path, ...]
    auto: DicomFile
    approved: DicomFile


@dataclass
class Pairing:
    pairs: list[CasePair] = field(default_factory=list)
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def _header(f: DicomFile) -> SetHeader:
    return SetHeader(f.sop_uid, f.label, f.approval, f.date, f.time)


def _pick(sets: Sequence[DicomFile]) -> DicomFile:
    return ranked([(_header(f), f) for f in sets])[0][1]  # type: ignore[list-item,return-value]


def _scan(folder: Path) -> tuple[list[DicomFile], list[tuple[str, str]]]:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    files, _ = archive_files(folder)
    return read_headers(files)


def pair_folders(auto_dir: str | Path, approved_dir: str | Path) -> Pairing:
    """Scan both folders and pair their structure sets by referenced CT series (see the module rule)."""
    auto_h, bad_a = _scan(Path(auto_dir))
    appr_h, bad_b = _scan(Path(approved_dir))
    out = Pairing(unmatched=[(p, why) for p, why in bad_a + bad_b])
    cts: dict[str, dict[str, Path]] = defaultdict(dict)
    for h in auto_h + appr_h:
        if h.modality == "CT":
            cts[h.series_uid].setdefault(h.sop_uid, h.path)
    sides: dict[str, dict[str, list[DicomFile]]] = {"auto": defaultdict(list), "approved": defaultdict(list)}
    for side, headers in (("auto", auto_h), ("approved", appr_h)):
        for h in headers:
            if h.modality != "RTSTRUCT":
                continue
            uid = next((u for u in h.ref_series if u in cts), None)
            if uid is None:
                out.unmatched.append((str(h.path), f"{side} RTSTRUCT refers to series {', '.join(h.ref_series) or '?'}, "
                                                   "no CT series of either folder"))
            else:
                sides[side][uid].append(h)
    for uid in sorted(set(sides["auto"]) | set(sides["approved"])):
        a, b = sides["auto"].get(uid), sides["approved"].get(uid)
        if a and b:
            out.pairs.append(CasePair(uid, tuple(sorted(cts[uid].values())), _pick(a), _pick(b)))
        else:
            missing = "approved" if a else "auto"
            for f in a or b or []:
                out.unmatched.append((str(f.path), f"CT series {uid} has no {missing} structure set"))
    if not out.pairs:
        raise DataError(f"no case pairs: no CT series of {auto_dir} / {approved_dir} is referenced by both an auto "
                        f"and an approved RTSTRUCT ({len(out.unmatched)} unmatched file(s))")
    return out


def organ_name(key: str) -> str:
    """The TG-263 name of a class, else the key itself (an ROI name no class accepts)."""
    entry = tg263_entry(key) if key in TG263 else None
    return entry[0] if entry else key


def organ_masks(rs: RtStruct, ct: Volume, aliases: Mapping[str, Sequence[str]] | None = None
                ) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Organ key -> (mask on the CT grid, the ROI names united into it); only ROIs with contours.

    The key is the class (e.g. ``rectum``) where the name mapping accepts the ROI, else ``roi:<roi_key>``.
    A set in another Frame of Reference, or referring to another series, is a :class:`DataError`.
    """
    rois = [r for r in rs.rois if r.contours]
    check_reference(rs, ct, rois)
    mapping = match_roi_names([r.name for r in rois], KNOWN_CLASSES, aliases)
    out: dict[str, tuple[np.ndarray, list[str]]] = {}
    for r in rois:
        key = mapping.get(r.name) or f"roi:{roi_key(r.name)}"
        mask, _ = rasterize_roi(r, ct)
        if key in out:
            out[key][0][...] |= mask
            out[key][1].append(r.name)
        else:
            out[key] = (mask, [r.name])
    return out


def compared_keys(auto: Mapping[str, Any], approved: Mapping[str, Any]) -> list[str]:
    """Organs measured: every organ of the auto set, and the approved set's organs a class accepts (an ROI only the
    clinic drew and no class knows, such as a PTV, ring or BODY, is not the model's and not an edit)."""
    return sorted(set(auto) | {k for k in approved if not k.startswith("roi:")})


def display_name(key: str, names: Sequence[str]) -> str:
    return organ_name(key) if not key.startswith("roi:") else names[0]


@dataclass
class PairData:
    """A pair read: the CT, both sets, and each side's organ masks."""

    ct: Volume
    auto: RtStruct
    approved: RtStruct
    auto_organs: dict[str, tuple[np.ndarray, list[str]]]
    approved_organs: dict[str, tuple[np.ndarray, list[str]]]


def read_pair(pair: CasePair, aliases: Mapping[str, Sequence[str]] | None = None) -> PairData:
    ct = read_dicom_files(pair.ct_files, pair.ct_files[0].parent)
    auto, approved = read_rtstruct(pair.auto.path), read_rtstruct(pair.approved.path)
    return PairData(ct, auto, approved, organ_masks(auto, ct, aliases), organ_masks(approved, ct, aliases))
