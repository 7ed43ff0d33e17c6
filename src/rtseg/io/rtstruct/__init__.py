"""DICOM RT Structure Sets: read (parse, rasterise onto a CT) and write (labels -> contours)."""
from __future__ import annotations

from rtseg.io.rtstruct.roi_names import DEFAULT_ROI_SYNONYMS, match_roi_names, roi_key, roi_names_for
from rtseg.io.rtstruct.read import (
    Contour,
    Roi,
    RoiMappingReport,
    RtStruct,
    rasterize_roi,
    read_rtstruct,
    rtstruct_to_labels,
)
from rtseg.io.rtstruct.write import align_to_grid, write_rtstruct

normalize_roi_name = roi_key  # the earlier name of the ROI-name comparison key

__all__ = [
    "DEFAULT_ROI_SYNONYMS",
    "Contour",
    "Roi",
    "RoiMappingReport",
    "RtStruct",
    "align_to_grid",
    "match_roi_names",
    "normalize_roi_name",
    "roi_key",
    "roi_names_for",
    "rasterize_roi",
    "read_rtstruct",
    "rtstruct_to_labels",
    "write_rtstruct",
]
