"""Geometry of a DICOM image series: slices sorted along their normal, the affine they span.

Built the way SimpleITK/GDCM do (sort along the slice normal, spacing from
positions) but refusing what they would silently get wrong: mixed sizes,
orientations or pixel spacings, duplicate positions, gantry tilt, missing slices.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydicom.dataset import Dataset

from rtseg.errors import DataError
from rtseg.io.dicom.values import count, float_list, single_slice_spacing
from rtseg.io.integrity import check_spacing

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Flips x and y: DICOM patient coordinates (LPS) <-> NIfTI world (RAS). Its own inverse."""


@dataclass(frozen=True)
class SliceHeader:
    """One file's header (read without pixel data) and where it came from."""

    path: Path
    ds: Dataset
    frame: int | None = None  # 1-based frame number within a multi-frame (enhanced) instance

    @property
    def name(self) -> str:
        """The file's name, with the frame for a frame of a multi-frame instance (for error messages)."""
        return self.path.name if self.frame is None else f"{self.path.name} (frame {self.frame})"


def _fmt(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "[" + ", ".join(f"{x:.4g}" for x in value) + "]"
    return str(value)


def _check_same(folder: Path, hs: list[SliceHeader], what: str, values: list[Any], same: Callable[[Any, Any], bool]) -> None:
    ref = values[0]
    bad = [h.name for h, v in zip(hs, values) if not same(v, ref)]
    if bad:
        counts = Counter(_fmt(v) for v in values)
        summary = ", ".join(f"{k} ({n} slice{'s' if n > 1 else ''})" for k, n in counts.most_common(4))
        raise DataError(f"{folder}: slices have mixed {what}: {summary}; e.g. {bad[0]} differs from {hs[0].name}")


def slice_geometry(folder: Path, hs: list[SliceHeader]) -> tuple[list[SliceHeader], np.ndarray]:
    """Sort slices along the normal, validate spacing, return (sorted headers, LPS affine)."""
    iops = [float_list(h.ds, "ImageOrientationPatient", 6, h.path) for h in hs]
    ipps = [float_list(h.ds, "ImagePositionPatient", 3, h.path) for h in hs]
    pss = [float_list(h.ds, "PixelSpacing", 2, h.path) for h in hs]
    sizes = [(count(h.ds, "Rows", h.path), count(h.ds, "Columns", h.path)) for h in hs]
    _check_same(folder, hs, "sizes (rows x columns)", [f"{r}x{c}" for r, c in sizes], lambda a, b: a == b)
    _check_same(folder, hs, "orientation (ImageOrientationPatient)", iops, lambda a, b: np.allclose(a, b, atol=1e-4))
    _check_same(folder, hs, "pixel spacing", pss, lambda a, b: np.allclose(a, b, atol=1e-4))
    check_spacing(hs[0].path, pss[0].tolist(), "PixelSpacing")
    frames = [count(h.ds, "NumberOfFrames", h.path, 1) for h in hs]
    if max(frames) > 1:  # enhanced instances arrive here as one header per frame (rtseg.io.dicom.frames)
        raise DataError(f"{folder}: a multi-frame image without functional groups (no position per frame); "
                        "expected CT slices or an Enhanced CT")

    row_cos, col_cos = iops[0][:3], iops[0][3:]
    if abs(np.linalg.norm(row_cos) - 1) > 1e-3 or abs(np.linalg.norm(col_cos) - 1) > 1e-3 or abs(row_cos @ col_cos) > 1e-3:
        raise DataError(f"{hs[0].path}: ImageOrientationPatient {list(iops[0])} is not two orthogonal unit vectors")
    normal = np.cross(row_cos, col_cos)
    pos = np.array(ipps)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    hs = [hs[i] for i in order]
    pos, proj = pos[order], proj[order]
    row_sp, col_sp = float(pss[0][0]), float(pss[0][1])

    n = len(hs)
    if n > 1:
        d = np.diff(proj)
        dup = np.flatnonzero(d < 1e-3)
        if dup.size:
            i = int(dup[0])
            raise DataError(
                f"{folder}: {hs[i].name} and {hs[i + 1].name} are at the same position "
                f"({proj[i]:.2f} mm along the slice normal); several acquisitions mixed in one series?"
            )
        offsets = (pos - pos[0]) - np.outer(proj - proj[0], normal)
        drift = np.linalg.norm(offsets, axis=1)
        if drift.max() > 0.1 * min(row_sp, col_sp):
            k = int(np.argmax(drift))
            angle = np.degrees(np.arctan2(drift[k], abs(proj[k] - proj[0])))
            raise DataError(
                f"{folder}: slice positions do not lie along the slice normal (gantry tilt of about {angle:.1f} degrees); "
                "tilted series are not supported, resample it to an untilted grid first"
            )
        dz = float(np.median(d))
        bad = np.flatnonzero(np.abs(d - dz) > max(0.01, 0.01 * dz))
        if bad.size:
            i = int(bad[0])
            hint = "; a slice is probably missing" if d[i] > dz else ""
            raise DataError(
                f"{folder}: uneven slice spacing: gap of {d[i]:.3f} mm between {hs[i].name} and {hs[i + 1].name} "
                f"(at {proj[i]:.2f} and {proj[i + 1]:.2f} mm along the normal), expected {dz:.3f} mm{hint}"
            )
        dz = float((proj[-1] - proj[0]) / (n - 1))
    else:
        dz = single_slice_spacing(hs[0].ds, hs[0].path)

    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_sp  # column index runs along the row direction
    lps[:3, 1] = col_cos * row_sp
    lps[:3, 2] = normal * dz
    lps[:3, 3] = pos[0]
    return hs, lps
