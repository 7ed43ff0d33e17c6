"""Predicted labels -> the DICOM objects a clinic imports: RTSTRUCT (planning systems) and SEG (PACS viewers)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from rtseg.io.contours import DEFAULT_HOLE_ENCODING
from rtseg.io.roi_names import roi_names_for
from rtseg.io.volume import Volume

DICOM_FORMATS = ("rtstruct", "seg")


def write_dicom_outputs(labels: np.ndarray, series: Volume, class_names: Sequence[str],
                        colors: Sequence[tuple[int, int, int]], prefix: Path, formats: Sequence[str], *,
                        holes: str = DEFAULT_HOLE_ENCODING, roi_name_map: Mapping[str, str] | None = None) -> list[Path]:
    """``<prefix>_rtstruct.dcm`` and/or ``<prefix>_seg.dcm`` against ``series``; none left behind on failure."""
    names = roi_names_for(class_names[1:], roi_name_map)
    written: list[Path] = []
    try:
        if "rtstruct" in formats:
            from rtseg.io.rtstruct_write import write_rtstruct

            written.append(write_rtstruct(labels, series, class_names, colors, f"{prefix}_rtstruct.dcm", names,
                                          holes=holes))
        if "seg" in formats:
            from rtseg.io.seg import write_seg

            written.append(write_seg(labels, series, class_names, colors, f"{prefix}_seg.dcm", names))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written
