"""Enhanced (multi-frame) CT: each frame as a slice, its geometry from the functional groups.

Enhanced CT Image Storage and Legacy Converted Enhanced CT Image Storage hold a
whole series in one instance (current Siemens, Philips and Canon scanners; PACS
that convert). Per frame, the Plane Position, Plane Orientation, Pixel Measures
and Pixel Value Transformation functional groups say what a single-frame slice
says at its top level; a per-frame item overrides the shared one. Here every
frame becomes a :class:`SliceHeader` whose dataset carries those values at the
top level (``ImagePositionPatient``, ``ImageOrientationPatient``,
``PixelSpacing``, ``RescaleSlope``...), so the one geometry code
(:func:`rtseg.io.dicom.geometry.slice_geometry`) sorts and checks frames and
slices alike, and a series of several multi-frame instances works as well.
"""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage

from rtseg.errors import DataError
from rtseg.io.dicom.geometry import SliceHeader
from rtseg.io.dicom.values import count

CT_STORAGE_CLASSES: tuple[str, ...] = (CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)
"""The SOP classes read as a CT series (single-frame slices, or enhanced multi-frame instances)."""

# functional group -> the attributes it holds that a single-frame slice has at its top level
_GROUPS: dict[str, tuple[str, ...]] = {
    "PlanePositionSequence": ("ImagePositionPatient",),
    "PlaneOrientationSequence": ("ImageOrientationPatient",),
    "PixelMeasuresSequence": ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"),
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept", "RescaleType"),
}
_COPIED = ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "NumberOfFrames", "PixelData")


def is_enhanced(ds: Dataset) -> bool:
    """Whether the instance keeps its geometry in functional groups (Enhanced / Legacy Converted Enhanced)."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _group_values(item: Dataset | None, out: dict[str, object]) -> None:
    if item is None:
        return
    for group, keywords in _GROUPS.items():
        seq = item.get(group)
        if not seq:
            continue
        for kw in keywords:
            if kw in seq[0] and seq[0][kw].value not in (None, ""):
                out[kw] = seq[0][kw].value


def frame_headers(h: SliceHeader) -> list[SliceHeader]:
    """One header per frame of an enhanced instance (frame numbers from 1); any other instance as it is."""
    ds = h.ds
    if not is_enhanced(ds):
        return [h]
    n = count(ds, "NumberOfFrames", h.path, 1)
    try:
        per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
        shared_seq = ds.get("SharedFunctionalGroupsSequence")
        top = Dataset()
        for elem in ds:
            if elem.keyword not in _COPIED:
                top.add(elem)
    except Exception as exc:
        raise DataError(f"{h.path}: the functional groups cannot be parsed ({type(exc).__name__})") from None
    if len(per_frame) != n:
        raise DataError(f"{h.path}: NumberOfFrames is {n} but the Per-Frame Functional Groups Sequence holds "
                        f"{len(per_frame)} item(s); the multi-frame image is damaged")
    shared = shared_seq[0] if shared_seq else None
    top.file_meta = getattr(ds, "file_meta", Dataset())
    out = []
    for k, item in enumerate(per_frame, start=1):
        values: dict[str, object] = {}
        try:  # pydicom converts values on access: a malformed one raises here
            _group_values(shared, values)
            _group_values(item, values)
        except Exception as exc:
            raise DataError(f"{h.path}: the functional groups of frame {k} cannot be parsed ({type(exc).__name__})") from None
        frame = Dataset()
        frame.update(top)
        for kw, value in values.items():
            setattr(frame, kw, value)
        out.append(SliceHeader(h.path, frame, k))
    return out


def expand_frames(hs: list[SliceHeader]) -> list[SliceHeader]:
    """Every enhanced instance's frames in place of it."""
    return [f for h in hs for f in frame_headers(h)]

