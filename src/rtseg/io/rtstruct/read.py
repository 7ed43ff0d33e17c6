"""RTSTRUCT parsing and rasterisation of its contours onto a CT grid.

Contours are polygons in patient coordinates (LPS mm), one per slice plane;
they are mapped to voxel indices through the CT's affine and filled by
:func:`rtseg.io.rtstruct.rasterize.fill_polygons`: contours on the same slice are XOR-ed
(a contour nested in another cuts it out) and voxel centres on a contour line
belong to the structure, so both hole encodings (separate inner contours and
keyhole cuts, rtseg's or plastimatch's) come back as drawn.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import RTStructureSetStorage

from rtseg.errors import ConfigError, DataError
from rtseg.io.dicom.geometry import LPS_TO_RAS
from rtseg.io.rtstruct.rasterize import fill_box
from rtseg.io.rtstruct.roi_names import match_roi_names
from rtseg.io.volume import Volume

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Contour:
    points: np.ndarray  # (N, 3) patient coordinates, LPS mm
    geometric_type: str
    image_uids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Roi:
    number: int
    name: str
    color: tuple[int, int, int] | None
    frame_of_reference_uid: str
    interpreted_type: str
    contours: tuple[Contour, ...]


@dataclass(frozen=True)
class RtStruct:
    """What an RT Structure Set says, without any patient information."""

    path: Path
    sop_instance_uid: str
    label: str
    frame_of_reference_uids: tuple[str, ...]
    referenced_study_uid: str
    referenced_series_uids: tuple[str, ...]
    referenced_sop_instance_uids: tuple[str, ...]
    rois: tuple[Roi, ...]

    @property
    def roi_names(self) -> list[str]:
        return [r.name for r in self.rois]

    def roi(self, name: str) -> Roi:
        for r in self.rois:
            if r.name == name:
                return r
        raise KeyError(name)


@dataclass
class RoiMappingReport:
    """How ROI names were mapped to classes, and what could not be used."""

    mapped: dict[str, str] = field(default_factory=dict)  # ROI name -> class name
    unmapped: list[str] = field(default_factory=list)
    missing_classes: list[str] = field(default_factory=list)  # organ classes no ROI mapped to
    empty_classes: list[str] = field(default_factory=list)  # mapped but no voxel filled
    skipped_contours: int = 0  # open, point, non-planar or off-grid contours
    overlap_voxels: int = 0  # voxels claimed by two classes (the higher label wins)
    united: dict[str, list[str]] = field(default_factory=dict)  # class -> its ROIs ("name (ROI n)") when several

    def summary(self) -> str:
        parts = [f"{len(self.mapped)} ROIs mapped"]
        if self.unmapped:
            parts.append(f"not mapped: {', '.join(self.unmapped)}")
        if self.missing_classes:
            parts.append(f"classes without ROI: {', '.join(self.missing_classes)}")
        if self.empty_classes:
            parts.append(f"classes with empty contours: {', '.join(self.empty_classes)}")
        if self.skipped_contours:
            parts.append(f"{self.skipped_contours} contours skipped (open, off-grid or not in a slice plane)")
        if self.overlap_voxels:
            parts.append(f"{self.overlap_voxels} voxels in two classes (higher label kept)")
        for cname, rois in self.united.items():
            parts.append(f"{cname} united from {len(rois)} ROIs: {', '.join(rois)}")
        return "; ".join(parts)


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "")


CONTOUR_DATA = 0x30060050


def _contour_values(item: Dataset, where: str) -> np.ndarray:
    """ContourData as floats, parsed straight from the file's bytes when pydicom has not decoded it yet.

    Decoding a DS value by value is the slow part of reading a large structure set.
    """
    if CONTOUR_DATA not in item:
        return np.empty(0)
    elem = item.get_item(CONTOUR_DATA)
    try:
        if getattr(elem, "is_raw", False) and isinstance(elem.value, bytes):
            text = elem.value.strip(b" \0")
            return np.array(text.split(b"\\"), dtype="S32").astype(np.float64) if text else np.empty(0)
        value = item.ContourData
        return np.asarray([float(v) for v in (value if elem.VM > 1 else [value])], dtype=np.float64)
    except (ValueError, TypeError):
        raise DataError(f"{where}: ContourData holds values that are not numbers") from None


def _parse_contour(item: Dataset, where: str) -> Contour | None:
    pts = _contour_values(item, where)
    if pts.size == 0:
        return None
    if pts.size % 3:
        raise DataError(f"{where}: ContourData has {pts.size} values, not a multiple of 3")
    uids = tuple(_text(c, "ReferencedSOPInstanceUID") for c in item.get("ContourImageSequence", []))
    return Contour(pts.reshape(-1, 3), _text(item, "ContourGeometricType").upper(), uids)


def read_rtstruct(path: str | os.PathLike[str]) -> RtStruct:
    """Parse an RT Structure Set: ROIs, colours, contours and referenced UIDs (no CT needed)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: RTSTRUCT file not found")
    try:
        ds = pydicom.dcmread(p)
        for _ in ds.iterall():  # pydicom parses lazily: a damaged element must fail here, not deep in the walk below
            pass
    except Exception as exc:
        raise DataError(f"{p}: not a readable DICOM file ({type(exc).__name__})") from None
    if _text(ds, "SOPClassUID") != RTStructureSetStorage and _text(ds, "Modality") != "RTSTRUCT":
        raise DataError(f"{p}: not an RT Structure Set (modality {_text(ds, 'Modality') or 'missing'}, expected RTSTRUCT)")

    frames: list[str] = []
    study = ""
    series: list[str] = []
    sops: list[str] = []
    for fr in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.append(_text(fr, "FrameOfReferenceUID"))
        for st in fr.get("RTReferencedStudySequence", []):
            study = study or _text(st, "ReferencedSOPInstanceUID")
            for se in st.get("RTReferencedSeriesSequence", []):
                series.append(_text(se, "SeriesInstanceUID"))
                sops.extend(_text(c, "ReferencedSOPInstanceUID") for c in se.get("ContourImageSequence", []))

    contours_by_number: dict[int, tuple[tuple[int, int, int] | None, tuple[Contour, ...]]] = {}
    for rc in ds.get("ROIContourSequence", []):
        num = int(rc.get("ReferencedROINumber", -1))
        color_val = rc.get("ROIDisplayColor")
        color = tuple(int(c) for c in color_val) if color_val is not None and len(color_val) == 3 else None
        cs = [_parse_contour(c, f"{p}: ROI number {num}") for c in rc.get("ContourSequence", [])]
        contours_by_number[num] = (color, tuple(c for c in cs if c is not None))  # type: ignore[assignment]

    interpreted = {
        int(o.get("ReferencedROINumber", -1)): _text(o, "RTROIInterpretedType")
        for o in ds.get("RTROIObservationsSequence", [])
    }
    rois = []
    for item in ds.get("StructureSetROISequence", []):
        num = int(item.get("ROINumber", -1))
        color, contours = contours_by_number.get(num, (None, ()))
        rois.append(Roi(num, _text(item, "ROIName"), color, _text(item, "ReferencedFrameOfReferenceUID"),
                        interpreted.get(num, ""), contours))
    return RtStruct(p, _text(ds, "SOPInstanceUID"), _text(ds, "StructureSetLabel"), tuple(frames), study,
                    tuple(series), tuple(sops), tuple(rois))


def check_reference(rs: RtStruct, series: Volume, rois: Sequence[Roi]) -> None:
    dicom = series.meta.get("dicom") or {}
    ct_frame = str(dicom.get("frame_of_reference_uid", "") or "")
    ct_series = str(dicom.get("series_instance_uid", "") or "")
    if not dicom:
        log.warning("%s: the CT has no DICOM metadata; cannot check that the RTSTRUCT refers to it", rs.path.name)
        return
    if ct_frame:
        frames = {f for f in rs.frame_of_reference_uids if f}
        frames |= {r.frame_of_reference_uid for r in rois if r.frame_of_reference_uid}
        if (frames and ct_frame not in frames) or any(
            r.frame_of_reference_uid and r.frame_of_reference_uid != ct_frame for r in rois
        ):
            raise DataError(
                f"{rs.path}: RTSTRUCT is in Frame of Reference {', '.join(sorted(frames))}, the CT series in {ct_frame}; "
                "it was drawn on another scan"
            )
    refs = {s for s in rs.referenced_series_uids if s}
    if ct_series and refs and ct_series not in refs:
        raise DataError(
            f"{rs.path}: RTSTRUCT refers to CT series {', '.join(sorted(refs))}, not to the given series {ct_series}"
        )


def rasterize_roi(roi: Roi, series: Volume) -> tuple[np.ndarray, int]:
    """Filled mask of one ROI on the series grid and the number of unusable contours.

    All contours of a slice are filled together (even-odd, centres on a line included).
    """
    inv = np.linalg.inv(LPS_TO_RAS @ series.affine)
    nx, ny, nz = series.shape
    mask = np.zeros(series.shape, dtype=bool)
    skipped = 0
    by_slice: dict[int, list[np.ndarray]] = defaultdict(list)
    for c in roi.contours:
        if c.geometric_type not in ("CLOSED_PLANAR", "") or len(c.points) == 0:
            skipped += 1
            continue  # 1- and 2-point "polygons" (rt-utils writes them for 1-voxel-wide tips) mark the voxels they touch
        vox = c.points @ inv[:3, :3].T + inv[:3, 3]
        k_mean = float(vox[:, 2].mean())
        k = int(round(k_mean))
        if np.ptp(vox[:, 2]) > 0.5 or abs(k_mean - k) > 0.5 or not 0 <= k < nz:
            skipped += 1
            continue
        by_slice[k].append(vox[:, :2])
    for k, polys in by_slice.items():
        box, filled = fill_box(polys, (nx, ny))
        mask[box + (k,)] = filled
    return mask, skipped


def note_united(rs: RtStruct, organ: str, rois: Sequence[Roi]) -> list[str]:
    """Several ROIs of one set mapped to one organ are united: say so (a warning when two share one name,
    which is more likely a second drawing than a part) and return them as 'name (ROI n)'."""
    shown = [f"{r.name} (ROI {r.number})" for r in rois]
    names = [r.name for r in rois]
    if len(set(names)) < len(names):
        log.warning("%s: %d ROIs of the same name map to %s and were united: %s; delete or rename the one not meant",
                    rs.path.name, len(rois), organ, ", ".join(shown))
    return shown


def merge_class_masks(shape: tuple[int, int, int], class_names: Sequence[str],
                      class_mask: Callable[[str], np.ndarray | None], report: RoiMappingReport) -> np.ndarray:
    """Label array from one mask per organ class (None: nothing mapped to it); where classes overlap the higher
    label wins. Classes without a mask, with an empty one, and overlapping voxels go into ``report``."""
    labels = np.zeros(shape, dtype=np.uint8 if len(class_names) <= 256 else np.uint16)
    for idx, cname in enumerate(class_names[1:], start=1):
        mask = class_mask(cname)
        if mask is None:
            report.missing_classes.append(cname)
        elif not mask.any():
            report.empty_classes.append(cname)
        else:
            report.overlap_voxels += int(np.count_nonzero(labels[mask]))
            labels[mask] = idx
    return labels


def rtstruct_to_labels(
    rtstruct_path: str | os.PathLike[str] | RtStruct,
    series: Volume,
    class_names: Sequence[str],
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Volume, RoiMappingReport]:
    """Label volume (class index per voxel, uint8) on the CT grid, and a report of the ROI mapping.

    ``class_names[0]`` is background. Several ROIs mapped to one class are
    united; where classes overlap the higher label wins (counted in the report).
    """
    rs = rtstruct_path if isinstance(rtstruct_path, RtStruct) else read_rtstruct(rtstruct_path)
    if len(class_names) < 2:
        raise ConfigError(f"need background plus at least one class, got {list(class_names)}")
    mapping = match_roi_names(rs.roi_names, class_names, aliases)
    used = [r for r in rs.rois if r.name in mapping]
    check_reference(rs, series, used)

    report = RoiMappingReport(mapped=dict(mapping), unmapped=[r.name for r in rs.rois if r.name not in mapping])

    def class_mask(cname: str) -> np.ndarray | None:
        rois = [r for r in used if mapping[r.name] == cname]
        if not rois:
            return None
        if len(rois) > 1:
            report.united[cname] = note_united(rs, cname, rois)
        mask = np.zeros(series.shape, dtype=bool)
        for r in rois:
            m, skipped = rasterize_roi(r, series)
            mask |= m
            report.skipped_contours += skipped
        return mask

    labels = merge_class_masks(series.shape, class_names, class_mask, report)
    meta = {k: v for k, v in series.meta.items() if k != "dicom"}
    meta["rtstruct"] = {"path": str(rs.path), "sop_instance_uid": rs.sop_instance_uid}
    return Volume(labels, series.affine.copy(), meta), report
