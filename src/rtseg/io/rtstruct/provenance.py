"""Who made a structure set and when: the header facts the audit keeps (no patient information).

``model`` is the model version an rtseg output names in its descriptions (``sha256:<12 hex>`` in each ROI's
ROIGenerationDescription, or ``model <12 hex>``: the first
12 hex digits of the checkpoint's SHA-256), or "" for a set that names none (e.g. a physician's).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pydicom

from rtseg.errors import DataError

_MODEL = re.compile(r"\b(?:model|sha256)[\s:=_-]*([0-9a-f]{12})", re.IGNORECASE)
_KEYS = ("SOPInstanceUID", "StructureSetLabel", "StructureSetDescription", "SeriesDescription", "ApprovalStatus",
         "StructureSetDate", "StructureSetTime", "Manufacturer", "SeriesInstanceUID", "FrameOfReferenceUID",
         "StructureSetROISequence")


def model_version_in(*texts: str) -> str:
    """The ``model <12 hex>`` a description names, else ""."""
    for t in texts:
        m = _MODEL.search(t or "")
        if m:
            return m.group(1).lower()
    return ""


def set_provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """Label, approval, date (YYYY-MM-DD HH:MM:SS where given), manufacturer and model version of an RTSTRUCT."""
    p = Path(path)
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=list(_KEYS))
    except Exception as exc:
        raise DataError(f"{p}: not a readable DICOM file ({type(exc).__name__})") from None
    generation = [str(r.get("ROIGenerationDescription", "") or "") for r in ds.get("StructureSetROISequence", [])]
    v = {k: str(ds.get(k, "") or "").strip() for k in _KEYS if k != "StructureSetROISequence"}
    d, t = re.sub(r"\D", "", v["StructureSetDate"])[:8], re.sub(r"\D", "", v["StructureSetTime"].split(".")[0])[:6]
    date = f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 else ""
    if date and t:
        t = t.ljust(6, "0")
        date += f" {t[:2]}:{t[2:4]}:{t[4:6]}"
    return {"sop_instance_uid": v["SOPInstanceUID"], "label": v["StructureSetLabel"], "approval": v["ApprovalStatus"].upper(),
            "date": date, "manufacturer": v["Manufacturer"], "series_uid": v["SeriesInstanceUID"],
            "frame_uid": v["FrameOfReferenceUID"],
            "model": model_version_in(v["StructureSetDescription"], v["SeriesDescription"], v["StructureSetLabel"],
                                      *generation[:1])}
