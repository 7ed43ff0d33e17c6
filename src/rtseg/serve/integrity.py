"""Instances that cannot be contoured, found while they are received (no decoding: header and lengths only).

Checked in the SCP on the dataset it already holds, so it costs nothing: a
transfer syntax no installed decoder reads (MPEG/HEVC video, JPEG XL...), a CT image without
Rows/Columns or pixel data, uncompressed pixel data shorter than its header
says (a file cut in transit or on disk). The instance is still stored (as
received) and its series fails with this reason once complete; damage only
a decoder can see (a cut JPEG 2000 stream) fails in the worker's reader.
"""
from __future__ import annotations

from typing import Any, Optional

from pydicom.uid import UID

from rtseg.io.dicom.pixels import decodable, syntax_name


def _int(ds: Any, keyword: str, default: Optional[int] = None) -> Optional[int]:
    try:
        value = ds.get(keyword, default)
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def instance_problem(ds: Any, transfer_syntax: str) -> Optional[str]:
    """Why this CT instance cannot be contoured, or None."""
    ts = UID(transfer_syntax)
    if not decodable(ts):
        return f"transfer syntax {syntax_name(ts)} cannot be decoded here (no installed decoder reads it)"
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        return "a CT image without Rows/Columns"
    if "PixelData" not in ds:
        return "no pixel data"
    if ts.is_encapsulated:
        return None
    bits, samples, frames = _int(ds, "BitsAllocated"), _int(ds, "SamplesPerPixel", 1), _int(ds, "NumberOfFrames", 1)
    if not bits or not samples or not frames:
        return "BitsAllocated, SamplesPerPixel or NumberOfFrames missing or not a number"
    expected = rows * cols * samples * frames * ((bits + 7) // 8)
    got = len(ds.PixelData or b"")
    if got < expected:
        return f"pixel data truncated: {got} of {expected} bytes ({rows}x{cols}, {bits} bits)"
    return None
