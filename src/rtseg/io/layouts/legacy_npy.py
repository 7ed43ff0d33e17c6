"""The ``legacy_npy`` dataset layout, the original code base's: ``PATH/<split>/CT/<id>.npy`` + ``SEG/<id>.npy``
(arrays without geometry); configs call it ``prostateCT_vol``, earlier rtseg versions ``seed``."""
from __future__ import annotations

from rtseg.errors import DataError
from rtseg.io.layouts.case_refs import CaseRef, Layout, SplitQuery
from rtseg.io.legacy_npy import CT_DIR, SEG_DIR, legacy_npy_case_ids, read_npy

NAME = "legacy_npy"


def list_legacy_npy_split(q: SplitQuery) -> list[CaseRef]:
    d = q.root / q.split
    if not d.is_dir():
        raise DataError(f"{d}: split folder not found (legacy_npy layout is PATH/<split>/CT/*.npy and PATH/<split>/SEG/*.npy)")
    return [CaseRef(cid, d / CT_DIR / f"{cid}.npy", d / SEG_DIR / f"{cid}.npy", NAME) for cid in legacy_npy_case_ids(d)]


LAYOUT = Layout(NAME, list_legacy_npy_split, "PATH/<split>/CT/<id>.npy + SEG/<id>.npy (no geometry)",
                read_image=read_npy, read_labels=read_npy, aliases=("prostateCT_vol", "seed"), has_geometry=False)
