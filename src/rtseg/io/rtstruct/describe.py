"""Say in a written RTSTRUCT how its contours were made (``StructureSetDescription``, type 3), atomically.

``rtseg serve`` uses it to record its route (adapt from the patient's plan, or the population model).
"""
from __future__ import annotations

import os
from pathlib import Path

import pydicom

from rtseg.io.atomic import atomic_path


def describe_rtstruct(path: str | os.PathLike[str], text: str) -> Path:
    """Set ``StructureSetDescription`` of the RTSTRUCT at ``path`` to ``text`` (at most 1024 characters, LO-free ST)."""
    p = Path(path)
    ds = pydicom.dcmread(p)
    ds.StructureSetDescription = text[:1024]
    with atomic_path(p) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return p
