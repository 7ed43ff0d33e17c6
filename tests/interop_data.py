"""Shared pieces of the interoperability tests: the shared CT series, its decompressed copy, organ masks on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as MplPath

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SERIES = DATA / "dicom-ct-series"
CLASSES = ["background", "prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right"]
COLORS = [(0, 255, 255), (204, 0, 102), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
ROI_OF = {2: "Bladder", 3: "Rectum", 5: "Femur_Head_R"}  # the TG-263 names rtseg writes for these labels


def need_series() -> Path:
    if not SERIES.is_dir():
        pytest.skip(f"shared test data not found at {SERIES} (only present in the development checkout)")
    return SERIES


def organ_labels(shape: tuple[int, int, int]) -> np.ndarray:
    """Three organs in voxel units on the 512x512x20 series: an ellipsoid, a ring (a hole in every slice) with an
    island in its hole on some slices, and a small sphere."""
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij", sparse=True)
    lab = np.zeros(shape, np.uint8)
    lab[((x - 250) / 60.0) ** 2 + ((y - 260) / 45.0) ** 2 + ((z - 10) / 8.0) ** 2 <= 1] = 2
    ring = (x - 150) ** 2 + (y - 350) ** 2
    lab[(ring <= 40 ** 2) & (ring >= 18 ** 2) & (np.abs(z - 10) <= 6)] = 3
    lab[(ring <= 6 ** 2) & (np.abs(z - 10) <= 2)] = 3  # island inside the hole
    lab[((x - 380) / 20.0) ** 2 + ((y - 380) / 20.0) ** 2 + ((z - 9) / 5.0) ** 2 <= 1] = 5
    return lab


def decompressed_copy(src: Path, dst: Path) -> Path:
    """The series with its pixel data decompressed and every UID kept (plastimatch cannot decode JPEG 2000)."""
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.decompress(generate_instance_uid=False)
        ds.save_as(dst / f.name)
    return dst


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else float(2.0 * np.count_nonzero(a & b) / total)


def fill_independent(polys_ij: list[np.ndarray], shape: tuple[int, int], rule: str) -> np.ndarray:
    """A reference reader of one slice with matplotlib: voxel centres inside polygons, XOR-ed or united."""
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centres = np.column_stack([ii.ravel(), jj.ravel()]).astype(float)
    out = np.zeros(shape, dtype=bool)
    for poly in polys_ij:
        lo, hi = np.floor(poly.min(axis=0)).astype(int), np.ceil(poly.max(axis=0)).astype(int)
        box = (ii >= lo[0]) & (ii <= hi[0]) & (jj >= lo[1]) & (jj <= hi[1])
        inside = np.zeros(shape, dtype=bool)
        inside[box] = MplPath(poly).contains_points(centres[box.ravel()])
        out = out ^ inside if rule == "xor" else out | inside
    return out
