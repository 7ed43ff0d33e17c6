"""Pixel data of CT slices and frames, decoded by the installed pydicom decoders.

pydicom decodes uncompressed, big endian, deflated and RLE data itself; the
compressed syntaxes go to maintained decoders (docs/DESIGN.md "Dependencies and
why"): GDCM (python-gdcm) for JPEG Lossless (.57, .70) and as a second decoder
for JPEG-LS and JPEG 2000, pyjpegls (CharLS) for JPEG-LS, pylibjpeg-openjpeg
for JPEG 2000. A transfer syntax none of them reads is refused with its name;
a stream a decoder fails on is refused with the decoder's exception type.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from rtseg.errors import DataError
from rtseg.io.dicom.geometry import SliceHeader
from rtseg.io.dicom.values import rescale

log = logging.getLogger(__name__)


def decodable(transfer_syntax: str) -> bool:
    """Whether an installed pixel-data decoder reads this transfer syntax."""
    try:
        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except NotImplementedError:
        return False


def syntax_name(transfer_syntax: str) -> str:
    """'JPEG Lossless, Non-Hierarchical (Process 14) (1.2.840.10008.1.2.4.57)': the name and the UID."""
    ts = UID(transfer_syntax)
    return f"{ts.name} ({ts})" if ts.name != str(ts) else f"{ts}"


def _decode(path: Path) -> np.ndarray:
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for damaged files
        raise DataError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    ts = str(getattr(ds.get("file_meta"), "TransferSyntaxUID", "") or "")
    if ts and not decodable(ts):
        raise DataError(f"{path}: pixel data in transfer syntax {syntax_name(ts)} cannot be decoded: "
                        "no installed decoder reads it")
    try:
        return ds.pixel_array
    except Exception as exc:
        where = f"; transfer syntax {syntax_name(ts)}" if ts else ""
        raise DataError(f"{path}: pixel data cannot be decoded ({type(exc).__name__}{where})") from None


class PixelReader:
    """Stored values and rescale of one slice or frame at a time; a multi-frame file is decoded once."""

    def __init__(self) -> None:
        self._path: Path | None = None
        self._frames: np.ndarray | None = None

    def _multi(self, h: SliceHeader) -> np.ndarray:
        if self._path != h.path:
            self._path, self._frames = h.path, None  # free the previous instance before decoding the next
            px = _decode(h.path)
            self._frames = px if px.ndim == 3 else px[None]
        assert self._frames is not None
        return self._frames

    def read(self, h: SliceHeader) -> tuple[np.ndarray, float, float]:
        """(stored values, RescaleSlope, RescaleIntercept) of one slice, or of one frame of a multi-frame image."""
        if h.frame is None:
            px = _decode(h.path)
        else:
            frames = self._multi(h)
            if h.frame > frames.shape[0]:
                raise DataError(f"{h.path}: frame {h.frame} of {frames.shape[0]} decoded; pixel data is short")
            px = frames[h.frame - 1]
        if px.ndim != 2:
            raise DataError(f"{h.path}: expected one grey-level image, found pixel array of shape {px.shape}")
        slope, intercept = rescale(h.ds, h.path)
        return px, slope, intercept
