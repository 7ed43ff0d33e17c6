"""How a derived object (RTSTRUCT, SEG) cites the CT images it was made on, single-frame or multi-frame.

A CT read by :func:`rtseg.io.dicom.series.read_dicom_series` carries, per slice in
array order, its SOP Class and Instance UIDs and, for a frame of an enhanced
(multi-frame) instance, its frame number (``meta["dicom"]["frame_numbers"]``).

- RTSTRUCT: a contour's Contour Image Sequence item is an Image SOP Instance
  Reference (PS3.3 Table 10-3): Referenced SOP Class/Instance UID, and the
  Referenced Frame Number when the instance is a multi-frame image and the
  reference does not apply to all its frames (a contour lies on one frame).
  The series listing (Referenced Frame of Reference > RT Referenced Study >
  RT Referenced Series > Contour Image Sequence) cites each instance once,
  without a frame number: the reference applies to all its frames.
- SEG: highdicom takes the source instances and one segmentation frame per
  source frame (for a multi-frame source, in its frame order), and writes the
  Referenced Frame Numbers itself.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from rtseg.errors import DataError


def _frames(dicom: dict) -> list[int | None]:
    n = len(dicom.get("sop_instance_uids", []))
    return list(dicom.get("frame_numbers") or [None] * n)


def contour_image_refs(dicom: dict) -> list[tuple[str, str, int | None]]:
    """Per slice (array order): (Referenced SOP Class UID, Referenced SOP Instance UID, frame number or None)."""
    return list(zip(dicom["sop_class_uids"], dicom["sop_instance_uids"], _frames(dicom)))


def series_image_refs(dicom: dict) -> list[tuple[str, str]]:
    """(SOP Class UID, SOP Instance UID) of each image instance once, in array order (a multi-frame one once)."""
    seen: dict[str, str] = {}
    for cls, sop in zip(dicom["sop_class_uids"], dicom["sop_instance_uids"]):
        seen.setdefault(sop, cls)
    return [(cls, sop) for sop, cls in seen.items()]


def is_multiframe(dicom: dict) -> bool:
    return any(f is not None for f in _frames(dicom))


def seg_source_files(dicom: dict) -> list[str]:
    """The files highdicom reads as SEG source images: each slice's, or the one multi-frame instance's."""
    files = list(dict.fromkeys(dicom["files"]))
    if is_multiframe(dicom) and len(files) != 1:
        raise DataError(f"the CT series is made of {len(files)} multi-frame instances; a SEG can reference one "
                        "multi-frame source image only (write an RTSTRUCT instead)")
    return files


def seg_sources(dicom: dict) -> list[Any]:
    """The SEG's source datasets (no pixel data). highdicom takes a multi-frame source's Pixel Measures and Plane
    Orientation from its shared functional groups only: where the source has them per frame (the reader checked
    they are the same in every frame), the first frame's go into the shared groups of this in-memory copy."""
    import pydicom
    from pydicom.sequence import Sequence as DicomSequence

    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in seg_source_files(dicom)]
    for ds in sources:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if not per_frame:
            continue
        if not ds.get("SharedFunctionalGroupsSequence"):
            ds.SharedFunctionalGroupsSequence = DicomSequence([pydicom.Dataset()])
        shared = ds.SharedFunctionalGroupsSequence[0]
        for group in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
            if group not in shared and group in per_frame[0]:
                shared[group] = per_frame[0][group]
    return sources


def seg_frames(arr: np.ndarray, dicom: dict) -> np.ndarray:
    """Label array (x, y, slice) -> SEG frames (frame, row, column) in the source images' order."""
    frames = _frames(dicom)
    stack = arr.transpose(2, 1, 0)
    if not is_multiframe(dicom):
        return np.ascontiguousarray(stack)
    out = np.zeros((max(f or 0 for f in frames),) + stack.shape[1:], dtype=stack.dtype)
    for k, f in enumerate(frames):
        out[int(f) - 1] = stack[k]  # type: ignore[arg-type]
    return out


def seg_pixels(seg: Any, dicom: dict, segments: Sequence[int]) -> tuple[np.ndarray, list[int]]:
    """A read SEG's pixels (slice, row, column, segment) for the CT slices it references, and those slices' indices.

    Single-frame CT: by source instance; multi-frame CT: by source frame of its one instance.
    """
    sops = list(dicom["sop_instance_uids"])
    referenced = seg.get_source_image_uids()
    if not is_multiframe(dicom):
        uids = {uid for _, _, uid in referenced}
        present = [i for i, s in enumerate(sops) if s in uids]
        if not present:
            return np.empty(0), []
        got = seg.get_pixels_by_source_instance(source_sop_instance_uids=[sops[i] for i in present],
                                                segment_numbers=list(segments), assert_missing_frames_are_empty=True)
        return got, present
    frames = _frames(dicom)
    if sops[0] not in {uid for _, _, uid in referenced}:
        return np.empty(0), []
    present = list(range(len(sops)))
    got = seg.get_pixels_by_source_frame(source_sop_instance_uid=sops[0],
                                         source_frame_numbers=[int(f) for f in frames],  # type: ignore[arg-type]
                                         segment_numbers=list(segments), assert_missing_frames_are_empty=True)
    return got, present
