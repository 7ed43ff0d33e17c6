"""Review pages of the most edited cases: the auto contours and the approved ones together, on the CT.

Built with the review page (:mod:`rtseg.review.page`): its first row shows the auto set ("Prediction"),
its second the approved set ("Ground truth"), and its metrics table the per-organ Dice and HD95 of
auto against approved.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rtseg.audit.pairing import CasePair, PairData, compared_keys, display_name, read_pair
from rtseg.labels import default_colors
from rtseg.review.page import review_page, write_page

REVIEW_DIR = "review"


def page_name(series_uid: str) -> str:
    return "case_" + hashlib.sha256(series_uid.encode()).hexdigest()[:12] + ".html"


def pair_labels(data: PairData) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names (background first) and both sides' label arrays (where organs overlap, the later name wins)."""
    keys = compared_keys(data.auto_organs, data.approved_organs)
    names = ["background"] + [display_name(k, (data.auto_organs.get(k) or data.approved_organs[k])[1]) for k in keys]
    arrays = []
    for side in (data.auto_organs, data.approved_organs):
        lab = np.zeros(data.ct.shape, dtype=np.uint8 if len(keys) < 255 else np.uint16)
        for i, k in enumerate(keys, start=1):
            if k in side:
                lab[side[k][0]] = i
        arrays.append(lab)
    return names, arrays[0], arrays[1]


def most_edited(rows: Sequence[Mapping[str, Any]], n: int) -> list[str]:
    """Cases by their total added path length, largest first (ties: lowest summed surface Dice first)."""
    apl: dict[str, float] = defaultdict(float)
    sdsc: dict[str, float] = defaultdict(float)
    for r in rows:
        apl[r["case"]] += float(r["apl_mm"])
        sdsc[r["case"]] += float(r["surface_dice_2mm"])
    return sorted(apl, key=lambda c: (-apl[c], sdsc[c], c))[:n]


def write_case_page(data: PairData, path: Path, title: str) -> Path:
    names, auto, approved = pair_labels(data)
    text = review_page(np.asarray(data.ct.array), auto, data.ct.affine, names, default_colors(len(names)), gt=approved,
                       title=title)
    return write_page(text, path)


def write_review_pages(pairs: Sequence[CasePair], rows: Sequence[Mapping[str, Any]], out: Path, n: int,
                       aliases: Mapping[str, Sequence[str]] | None = None) -> dict[str, str]:
    """Pages of the ``n`` most edited cases under ``out/review/``; case -> path relative to ``out``."""
    by_uid = {p.series_uid: p for p in pairs}
    written = {}
    for uid in most_edited([r for r in rows if r["case"] in by_uid], n):
        rel = f"{REVIEW_DIR}/{page_name(uid)}"
        write_case_page(read_pair(by_uid[uid], aliases), out / rel, f"rtseg audit: auto (top) and approved (bottom), "
                        f"CT series ...{uid[-12:]}")
        written[uid] = rel
    return written
