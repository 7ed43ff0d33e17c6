"""Say in a written RTSTRUCT how its contours were made (``StructureSetDescription``, type 3), atomically.

``rtseg serve`` uses it to record its route (adapt from the patient's plan, or the population model).
"""
from __future__ import annotations

import os
from pathlib import Path

import pydicom

from rtseg.io.atomic import atomic_path


def describe_rtstruct(path: str | os.PathLike[str], text: str) -> Path:
    """Put ``text`` before the ``StructureSetDescription`` of the RTSTRUCT at ``path`` (an ST: 1024 characters at
    most); what it said (the QA gate's flags) follows."""
    p = Path(path)
    ds = pydicom.dcmread(p)
    before = str(ds.get("StructureSetDescription", "") or "")
    ds.StructureSetDescription = (f"{text} | {before}" if before else text)[:1024]
    with atomic_path(p) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return p
