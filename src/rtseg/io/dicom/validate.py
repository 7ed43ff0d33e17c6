"""The check every RTSTRUCT and SEG passes before it is written: nothing invalid or empty leaves rtseg.

The writers (:func:`rtseg.io.rtstruct.write.write_rtstruct`, :func:`rtseg.io.dicom.seg.write_seg`)
call :func:`check_written` on the temporary file they wrote, before it replaces the target, so no
caller can skip it: a file that fails is removed and the write raises one ``DataError`` line.

What is checked is what dciodvfy (dicom3tools) checks of the objects rtseg writes: the Type 1
attributes (present and not empty; a Type 1 sequence holds at least one item) and the Type 2 ones
(present, may be empty) of the modules we fill, plus what makes the object useful and
consistent: at least one ROI, each with at least one contour of 3 or more points (RTSTRUCT); at
least one segment with at least one frame (SEG); every ROI number cited exists; every referenced
UID is present. The source series must have at least :data:`MIN_SLICES` slices
(:func:`check_series_extent`): one or two slices are not a volume a 3D model can contour.
"""
from __future__ import annotations

from pathlib import Path
import struct
from typing import Any, Iterable, Optional, Sequence

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword

from rtseg.errors import DataError

#: Fewer slices than this along any axis: not a 3D volume; no network runs, no DICOM object is written.
MIN_SLICES = 3
PROBLEMS_LISTED = 5
_HEADER = struct.Struct("<HHI")

_COMMON_TYPE1 = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality")
_COMMON_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber")


def check_series_extent(shape: Sequence[int], source: str) -> None:
    """Refuse a volume thinner than :data:`MIN_SLICES` along any axis (a 1- or 2-slice series)."""
    thin = [int(n) for n in shape[:3] if int(n) < MIN_SLICES]
    if thin:
        raise DataError(f"{source}: {min(thin)} slice(s) along one axis (shape {tuple(int(n) for n in shape)}); "
                        f"the model contours 3D volumes of at least {MIN_SLICES} slices, so nothing was contoured")


def _empty(ds: Dataset, keyword: str) -> bool | None:
    """None: absent; True: present but empty (a sequence without items); False: has a value. Raw values stay raw."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag not in ds:
        return None
    el = ds.get_item(tag)
    if isinstance(el, RawDataElement):
        value = el.value
        return value is None or len(value.strip(b" \0")) == 0
    value = el.value
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return len(value.strip(" \0" if isinstance(value, str) else b" \0")) == 0
    try:
        return len(value) == 0
    except TypeError:
        return False


def _type1(ds: Dataset, keywords: Iterable[str], where: str, problems: list[str]) -> None:
    for kw in keywords:
        state = _empty(ds, kw)
        if state is None:
            problems.append(f"{where}{kw} (Type 1) is missing")
        elif state:
            problems.append(f"{where}{kw} (Type 1) is empty")


def _type2(ds: Dataset, keywords: Iterable[str], where: str, problems: list[str]) -> None:
    problems.extend(f"{where}{kw} (Type 2) is missing" for kw in keywords if _empty(ds, kw) is None)


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    return list(ds.get(keyword) or []) if _empty(ds, keyword) is False else []


def _n_values(ds: Dataset, keyword: str) -> int:
    """Number of backslash-separated values, without converting a raw value (ContourData can be megabytes)."""
    el = ds.get_item(tag_for_keyword(keyword))  # type: ignore[arg-type]
    if isinstance(el, RawDataElement):
        return 0 if not el.value else el.value.count(b"\\") + 1
    value = el.value
    if value is None:
        return 0
    return 1 if isinstance(value, (str, bytes, int, float)) else len(value)  # a MultiValue: its length


def _references(ds: Dataset, problems: list[str]) -> tuple[str, set[str]]:
    """The Referenced Frame of Reference Sequence down to the referenced slices: (frame UID, SOP Instance UIDs)."""
    frames = _items(ds, "ReferencedFrameOfReferenceSequence")
    if not frames:
        problems.append("ReferencedFrameOfReferenceSequence holds no item (the CT it was drawn on is not cited)")
        return "", set()
    sops: set[str] = set()
    _type1(frames[0], ("FrameOfReferenceUID", "RTReferencedStudySequence"), "ReferencedFrameOfReferenceSequence > ",
           problems)
    for study in _items(frames[0], "RTReferencedStudySequence"):
        _type1(study, ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID", "RTReferencedSeriesSequence"),
               "RTReferencedStudySequence > ", problems)
        for series in _items(study, "RTReferencedSeriesSequence"):
            _type1(series, ("SeriesInstanceUID", "ContourImageSequence"), "RTReferencedSeriesSequence > ", problems)
            for image in _items(series, "ContourImageSequence"):
                _type1(image, ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"), "ContourImageSequence > ",
                       problems)
                sops.add(str(image.get("ReferencedSOPInstanceUID", "")))
    return str(frames[0].get("FrameOfReferenceUID", "")), sops


_ITEM, _SEQ_END, _UNDEFINED = 0xFFFEE000, 0xFFFEE0DD, 0xFFFFFFFF
_CONTOUR_IMAGES, _GEOMETRY, _N_POINTS, _CONTOUR_DATA = 0x30060016, 0x30060042, 0x30060046, 0x30060050
_SOP_CLASS, _SOP_INSTANCE = 0x00081150, 0x00081155


def _raw_elements(value: bytes) -> Optional[dict[int, bytes]]:
    """Implicit VR Little Endian elements of one item, by tag (None: an undefined length, not walked here)."""
    out, pos, end = {}, 0, len(value)
    while pos + 8 <= end:
        group, element, length = _HEADER.unpack_from(value, pos)
        if length == _UNDEFINED:
            return None
        out[(group << 16) | element] = value[pos + 8: pos + 8 + length]
        pos += 8 + length
    return out if pos == end else None


def _raw_items(value: bytes) -> Optional[list[bytes]]:
    """The items of a sequence value of defined-length items (None: anything else, left to pydicom)."""
    items, pos, end = [], 0, len(value)
    while pos + 8 <= end:
        group, element, length = _HEADER.unpack_from(value, pos)
        tag = (group << 16) | element
        if tag == _SEQ_END:
            return items
        if tag != _ITEM or length == _UNDEFINED or pos + 8 + length > end:
            return None
        items.append(value[pos + 8: pos + 8 + length])
        pos += 8 + length
    return items if pos == end else None  # trailing bytes that are no item: not ours to guess


def _raw_contour_items(roi: Dataset) -> Optional[list[tuple[dict[int, bytes], list[dict[int, bytes]]]]]:
    """(elements, Contour Image Sequence items' elements) of each contour, from the raw bytes of an Implicit VR
    Little Endian ContourSequence with defined lengths; None for anything else (pydicom reads that)."""
    el = roi.get_item(0x30060040)
    if not isinstance(el, RawDataElement) or not el.is_implicit_VR or not el.is_little_endian or el.value is None:
        return None
    items = _raw_items(el.value)
    if items is None:
        return None
    out = []
    for item in items:
        elements = _raw_elements(item)
        refs = None if elements is None else _raw_items(elements.get(_CONTOUR_IMAGES, b""))
        images = None if refs is None else [_raw_elements(r) for r in refs]
        if elements is None or images is None or any(i is None for i in images):
            return None
        out.append((elements, [i for i in images if i is not None]))
    return out


def _value(elements: dict[int, bytes], tag: int) -> bytes:
    return elements.get(tag, b"").strip(b" \0")


def _raw_contours(roi: Dataset, where: str, sops: set[str], problems: list[str]) -> Optional[int]:
    """The ContourSequence checks of :func:`_contours`, on the raw bytes (None: not walkable, see above).

    Why: a fragmented prediction has tens of thousands of contours, and turning each into a pydicom
    Dataset (with its Contour Image Sequence) took ~4 s of a 30 s prediction; walking the element
    headers checks the same rules in a small fraction of that."""
    contours = _raw_contour_items(roi)
    if contours is None:
        return None
    for elements, images in contours:
        for tag, kw in ((_GEOMETRY, "ContourGeometricType"), (_N_POINTS, "NumberOfContourPoints"),
                        (_CONTOUR_DATA, "ContourData")):
            if tag not in elements:
                problems.append(f"{where}{kw} (Type 1) is missing")
            elif not _value(elements, tag):
                problems.append(f"{where}{kw} (Type 1) is empty")
        points, data = _value(elements, _N_POINTS), _value(elements, _CONTOUR_DATA)
        if points and data:
            n, values = int(points) if points.isdigit() else -1, data.count(b"\\") + 1
            if n < 3 or values != 3 * n:
                problems.append(f"{where}ContourData holds {values} values for {points.decode(errors='replace')} "
                                "points (expected 3 per point, at least 3 points)")
        for image in images:
            for tag, kw in ((_SOP_CLASS, "ReferencedSOPClassUID"), (_SOP_INSTANCE, "ReferencedSOPInstanceUID")):
                if not _value(image, tag):
                    state = "empty" if tag in image else "missing"
                    problems.append(f"{where}ContourImageSequence > {kw} (Type 1) is {state}")
            if _value(image, _SOP_INSTANCE).decode(errors="replace") not in sops:
                problems.append(f"{where}a contour references a slice the structure set does not cite")
    return len(contours)


def _contours(roi: Dataset, number: Any, sops: set[str], problems: list[str]) -> int:
    """Check one ROI Contour item's contours; returns how many it has."""
    where = f"ROIContourSequence > ROI {number} > ContourSequence > "
    fast = _raw_contours(roi, where, sops, problems)
    if fast is not None:
        return fast
    contours = _items(roi, "ContourSequence")
    for c in contours:
        _type1(c, ("ContourGeometricType", "NumberOfContourPoints", "ContourData"), where, problems)
        if _empty(c, "ContourData") is False and _empty(c, "NumberOfContourPoints") is False:
            n = int(c.NumberOfContourPoints)
            if n < 3 or _n_values(c, "ContourData") != 3 * n:
                problems.append(f"{where}ContourData holds {_n_values(c, 'ContourData')} values for "
                                f"{n} points (expected 3 per point, at least 3 points)")
        for image in _items(c, "ContourImageSequence"):
            _type1(image, ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID"), where + "ContourImageSequence > ",
                   problems)
            if str(image.get("ReferencedSOPInstanceUID", "")) not in sops:
                problems.append(f"{where}a contour references a slice the structure set does not cite")
    return len(contours)


def rtstruct_problems(ds: Dataset) -> list[str]:
    """What is wrong with an RT Structure Set (empty: nothing)."""
    problems: list[str] = []
    _type1(ds, (*_COMMON_TYPE1, "StructureSetLabel", "StructureSetROISequence", "ROIContourSequence",
                "RTROIObservationsSequence"), "", problems)
    _type2(ds, (*_COMMON_TYPE2, "StructureSetDate", "StructureSetTime"), "", problems)
    if str(ds.get("Modality", "")) != "RTSTRUCT":
        problems.append(f"Modality is {ds.get('Modality', '')!r}, expected RTSTRUCT")
    frame, sops = _references(ds, problems)
    numbers = set()
    for roi in _items(ds, "StructureSetROISequence"):
        _type1(roi, ("ROINumber", "ReferencedFrameOfReferenceUID"), "StructureSetROISequence > ", problems)
        _type2(roi, ("ROIName", "ROIGenerationAlgorithm"), "StructureSetROISequence > ", problems)
        numbers.add(str(roi.get("ROINumber", "")))
        if frame and str(roi.get("ReferencedFrameOfReferenceUID", "")) != frame:
            problems.append(f"ROI {roi.get('ROINumber', '?')} is in another Frame of Reference than the structure set")
    contoured = set()
    for roi in _items(ds, "ROIContourSequence"):
        _type1(roi, ("ReferencedROINumber",), "ROIContourSequence > ", problems)
        number = str(roi.get("ReferencedROINumber", ""))
        if number not in numbers:
            problems.append(f"ROIContourSequence cites ROI {number or '?'}, which StructureSetROISequence lacks")
        if _contours(roi, number, sops, problems):
            contoured.add(number)
    for number in sorted(numbers - contoured):
        problems.append(f"ROI {number} has no contour")
    for obs in _items(ds, "RTROIObservationsSequence"):
        _type1(obs, ("ObservationNumber", "ReferencedROINumber"), "RTROIObservationsSequence > ", problems)
        _type2(obs, ("RTROIInterpretedType", "ROIInterpreter"), "RTROIObservationsSequence > ", problems)
        if str(obs.get("ReferencedROINumber", "")) not in numbers:
            problems.append(f"RTROIObservationsSequence cites ROI {obs.get('ReferencedROINumber', '?')}, which "
                            "StructureSetROISequence lacks")
    return problems


def seg_problems(ds: Dataset) -> list[str]:
    """What is wrong with a DICOM Segmentation (empty: nothing); read without its pixel data."""
    problems: list[str] = []
    _type1(ds, (*_COMMON_TYPE1, "FrameOfReferenceUID", "SegmentSequence", "NumberOfFrames", "SegmentationType",
                "ContentLabel", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence",
                "ReferencedSeriesSequence", "DimensionIndexSequence"), "", problems)
    _type2(ds, _COMMON_TYPE2, "", problems)
    if str(ds.get("Modality", "")) != "SEG":
        problems.append(f"Modality is {ds.get('Modality', '')!r}, expected SEG")
    numbers = set()
    for seg in _items(ds, "SegmentSequence"):
        _type1(seg, ("SegmentNumber", "SegmentLabel", "SegmentAlgorithmType", "SegmentedPropertyCategoryCodeSequence",
                     "SegmentedPropertyTypeCodeSequence"), "SegmentSequence > ", problems)
        numbers.add(int(seg.get("SegmentNumber", 0) or 0))
    framed = set()
    sources = set()
    for series in _items(ds, "ReferencedSeriesSequence"):
        _type1(series, ("SeriesInstanceUID", "ReferencedInstanceSequence"), "ReferencedSeriesSequence > ", problems)
        sources |= {str(i.get("ReferencedSOPInstanceUID", "")) for i in _items(series, "ReferencedInstanceSequence")}
    for frame in _items(ds, "PerFrameFunctionalGroupsSequence"):
        for ident in _items(frame, "SegmentIdentificationSequence"):
            framed.add(int(ident.get("ReferencedSegmentNumber", 0) or 0))
        for derivation in _items(frame, "DerivationImageSequence"):
            for src in _items(derivation, "SourceImageSequence"):
                if str(src.get("ReferencedSOPInstanceUID", "")) not in sources:
                    problems.append("a frame is derived from a slice the SEG's ReferencedSeriesSequence does not cite")
    if numbers and not framed & numbers:
        problems.append("no segment has a frame: the segmentation is empty")
    return problems


def check_written(path: str | Path, kind: str, target: str | Path | None = None) -> None:
    """Read back the file just written (``kind``: ``RTSTRUCT`` or ``SEG``) and raise one ``DataError`` if it is not
    valid; ``target`` is the name the error gives (the temporary file is not what the user asked for)."""
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    problems = rtstruct_problems(ds) if kind == "RTSTRUCT" else seg_problems(ds)
    if problems:
        more = f" (and {len(problems) - PROBLEMS_LISTED} more)" if len(problems) > PROBLEMS_LISTED else ""
        raise DataError(f"{target or path}: the {kind} would not be valid DICOM: {'; '.join(problems[:PROBLEMS_LISTED])}"
                        f"{more}; nothing was written")
