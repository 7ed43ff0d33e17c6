"""DICOM RT Structure Sets: read (parse, rasterise onto a CT) and write (labels -> contours)."""
from __future__ import annotations

from rtseg.io.rtstruct_read import (
    DEFAULT_ROI_SYNONYMS,
    Contour,
    Roi,
    RoiMappingReport,
    RtStruct,
    match_roi_names,
    normalize_roi_name,
    rasterize_roi,
    read_rtstruct,
    rtstruct_to_labels,
)
from rtseg.io.rtstruct_write import align_to_grid, slice_contours, write_rtstruct

__all__ = [
    "DEFAULT_ROI_SYNONYMS",
    "Contour",
    "Roi",
    "RoiMappingReport",
    "RtStruct",
    "align_to_grid",
    "match_roi_names",
    "normalize_roi_name",
    "rasterize_roi",
    "read_rtstruct",
    "rtstruct_to_labels",
    "slice_contours",
    "write_rtstruct",
]
