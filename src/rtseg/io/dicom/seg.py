"""Label volume <-> DICOM Segmentation (SEG), through highdicom.

PACS viewers display SEG where they ignore RTSTRUCT. One segment per organ
class, segment number = label value (as the RTSTRUCT's ROI number), coded with
its SNOMED CT anatomy (from the TG-263 table in :mod:`rtseg.io.rtstruct.roi_names`),
frames referencing the CT slices they were predicted on. Reading maps segment
labels to classes with the same name matching as RTSTRUCT ROIs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from rtseg import __version__
from rtseg.errors import ConfigError, DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.dicom.references import seg_frames, seg_pixels, seg_sources
from rtseg.io.dicom.validate import check_series_extent, check_written
from rtseg.io.fingerprint import ModelIdentity
from rtseg.io.rtstruct.roi_names import check_roi_names, match_roi_names, roi_names_for, tg263_entry
from rtseg.io.rtstruct.read import RoiMappingReport, merge_class_masks
from rtseg.io.rtstruct.write import _labels_array, referenced_series, short_text
from rtseg.io.volume import Volume

log = logging.getLogger(__name__)

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SEG_SERIES_NUMBER = 1001


def _segment_codes(class_name: str) -> tuple[object, object, list[object]]:
    """(category, property type, anatomic region modifiers) for a class; generic "Organ" when TG-263 lacks it."""
    from pydicom.sr.codedict import codes

    entry = tg263_entry(class_name)
    if entry is None:
        log.info("class %r has no SNOMED code in rtseg's table; its segment is coded as 'Organ'", class_name)
        return codes.SCT.AnatomicalStructure, codes.SCT.Organ, []
    _, keyword, side = entry
    return codes.SCT.AnatomicalStructure, getattr(codes.SCT, keyword), [getattr(codes.SCT, side)] if side else []


def write_seg(
    labels: np.ndarray | Volume,
    series: Volume,
    class_names: Sequence[str],
    colors: Sequence[tuple[int, int, int]],
    path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    model: Optional[ModelIdentity] = None,
    description: str = "",
    segment_descriptions: Optional[Mapping[str, str]] = None,
) -> Path:
    """Write a BINARY DICOM SEG against ``series``: one segment per organ class, label value = segment number.

    ``model`` goes into the Algorithm Identification (version and parameters: checkpoint name and SHA-256);
    ``segment_descriptions`` (by class name) into each segment's SegmentDescription (its QA flags), ``description``
    (the case's flags) shortened into ContentDescription. A label volume with no organ, a series thinner than
    3 slices or a dataset that fails :func:`rtseg.io.dicom.validate.seg_problems` raises ``DataError`` and writes
    nothing."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    source = series.meta.get("source", "CT series")
    check_series_extent(series.shape, source)
    dicom = referenced_series(series)
    seg_names = check_roi_names(names) if names is not None else roi_names_for(class_names[1:])
    arr = _labels_array(labels, series, class_names, colors, seg_names)
    if not arr.any():
        raise DataError(f"{source}: the prediction holds no organ (every voxel is background); an empty SEG is not "
                        "useful, so none was written")
    try:
        sources = seg_sources(dicom)
    except (OSError, KeyError) as exc:
        raise DataError(f"{series.meta.get('source', 'CT series')}: CT slices cannot be re-read for the SEG "
                        f"({type(exc).__name__})") from None
    algorithm = hd.AlgorithmIdentificationSequence(
        name="rtseg", family=codes.cid7162.ArtificialIntelligence,
        version=model.text(64, f"{__version__} ") if model is not None else __version__,
        parameters=None if model is None else {"checkpoint": model.name.replace("\\", "/")[:200], "sha256": model.short})
    descriptions = []
    for number, (cls, name, rgb) in enumerate(zip(class_names[1:], seg_names, colors), start=1):
        category, kind, sides = _segment_codes(cls)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=None,
            primary_anatomic_structures=[kind, *sides] if sides else None,
            display_color=hd.color.CIELabColor.from_rgb(*[int(v) for v in rgb])))
    # frames follow the source images (or a multi-frame source's frames): (frame, row, column) = the labels' (k, j, i)
    pixels = seg_frames(arr, dicom).astype(np.uint8 if len(class_names) <= 256 else np.uint16)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="rtseg", manufacturer_model_name="rtseg",
        software_versions=__version__, device_serial_number=f"rtseg-{__version__}",
        series_description="rtseg automatic segmentation", content_label="RTSEG",
        content_description=(description or "automatic organ segmentation, to be reviewed")[:64])
    notes = segment_descriptions or {}
    for item, cls in zip(seg.SegmentSequence, class_names[1:]):
        if notes.get(cls):
            item.SegmentDescription = short_text(notes[cls])
    target = Path(path)
    with atomic_path(target) as tmp:
        seg.save_as(tmp)
        check_written(tmp, "SEG", target)
    return target


def _read_seg(path: Path):  # noqa: ANN202 - highdicom is imported lazily
    import highdicom as hd

    if not path.is_file():
        raise DataError(f"{path}: SEG file not found")
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable DICOM Segmentation ({type(exc).__name__})") from None
    return seg


def seg_to_labels(
    path: str | os.PathLike[str],
    series: Volume,
    class_names: Sequence[str],
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Volume, RoiMappingReport]:
    """Label volume on the CT grid from a SEG that references the CT's slices, and how segments were mapped."""
    p = Path(path)
    if len(class_names) < 2:
        raise ConfigError(f"need background plus at least one class, got {list(class_names)}")
    seg = _read_seg(p)
    dicom = series.meta.get("dicom") or {}
    frame = str(dicom.get("frame_of_reference_uid", "") or "")
    if frame and str(seg.get("FrameOfReferenceUID", "")) != frame:
        raise DataError(f"{p}: SEG is in Frame of Reference {seg.get('FrameOfReferenceUID', '')}, the CT series in "
                        f"{frame}; it was made on another scan")
    sops = list(dicom.get("sop_instance_uids", []))
    if len(sops) != series.shape[2]:
        raise DataError(f"{p}: the CT volume carries no SOP Instance UIDs per slice; read it with read_dicom_series")
    labels_of = {int(n): str(seg.get_segment_description(int(n)).SegmentLabel) for n in seg.get_segment_numbers()}
    mapping = match_roi_names(list(labels_of.values()), class_names, aliases)
    report = RoiMappingReport(mapped=dict(mapping), unmapped=[s for s in labels_of.values() if s not in mapping])
    wanted = [n for n, s in labels_of.items() if s in mapping]
    if not {uid for _, _, uid in seg.get_source_image_uids()} & set(sops):
        raise DataError(f"{p}: SEG frames reference none of the CT series' slices; it was made on other images")
    pixels = np.zeros((len(sops), series.shape[1], series.shape[0], max(len(wanted), 1)), dtype=bool)
    if wanted:
        got, present = seg_pixels(seg, dicom, wanted)
        # BINARY frames are 0/1; FRACTIONAL ones come rescaled to [0, 1]: a voxel is in the segment from 0.5 on
        pixels[present] = got >= 0.5 if np.issubdtype(got.dtype, np.floating) else got > 0

    def class_mask(cname: str) -> np.ndarray | None:
        cols = [wanted.index(n) for n in wanted if mapping[labels_of[n]] == cname]
        return pixels[..., cols].any(axis=-1).transpose(2, 1, 0) if cols else None

    labels = merge_class_masks(series.shape, class_names, class_mask, report)
    meta = {k: v for k, v in series.meta.items() if k != "dicom"}
    meta["seg"] = {"path": str(p), "sop_instance_uid": str(seg.SOPInstanceUID)}
    return Volume(labels, series.affine.copy(), meta), report
