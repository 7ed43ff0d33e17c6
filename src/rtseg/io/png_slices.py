"""The original code base's 2D PNG slices + RGB colour masks -> image and label volumes.

Layout of one patient: ``<case>/CT/*.png`` (grey-level slices) and
``<case>/MASK/*.png`` (RGB masks, one colour per organ, black background),
paired by file name and stacked in natural order of the names (slice_2 before
slice_10). Image and labels go through the same geometric resampling (the
original code base subsampled the CT with stride 2 and the masks with stride 7, so they did
not line up); the CT is interpolated linearly, the labels by nearest neighbour.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from skimage.transform import resize

from rtseg.errors import DataError
from rtseg.io.dicom.geometry import LPS_TO_RAS
from rtseg.io.volume import Volume

PNG_CT_DIR, PNG_MASK_DIR = "CT", "MASK"
DEFAULT_COLOR_TOLERANCE = 40.0  # RGB Euclidean distance accepted as "that colour" (anti-aliasing, JPEG history)


@dataclass(frozen=True)
class PngReading:
    """How one patient's PNG slices become volumes: the organ colours and the grid to resample onto.

    ``colors`` are the mask colours of labels 1, 2, ... (black is background); ``spacing`` the
    original pixel width, height and slice distance in mm; ``size`` resamples in plane to
    (columns, rows); ``n_slices`` centre-trims or zero-pads the stack; ``tolerance`` is the largest
    RGB distance to a colour still counted as it.
    """

    colors: Sequence[Sequence[int]]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    size: tuple[int, int] | None = None
    n_slices: int | None = None
    tolerance: float = DEFAULT_COLOR_TOLERANCE


@dataclass(frozen=True)
class PngCaseReport:
    n_slices_in: int
    unmatched_pixels: int  # mask pixels matching no colour within tolerance (set to background)


def natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img)
    except Exception as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None


def read_grey_png(path: Path) -> np.ndarray:
    arr = _read_png(path)
    if arr.ndim == 3:
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(f"{path}: CT slice is in colour; expected a grey-level image")
        arr = rgb[..., 0]
    return arr


def read_rgb_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None


def colors_to_labels(
    rgb: np.ndarray, colors: Sequence[Sequence[int]], tolerance: float = DEFAULT_COLOR_TOLERANCE
) -> tuple[np.ndarray, int]:
    """Class index per pixel (colour i -> label i+1, black -> 0) by nearest colour; and the count matching none."""
    palette = np.array([(0, 0, 0), *[tuple(c) for c in colors]], dtype=np.float32)
    px = rgb.reshape(-1, 3).astype(np.float32)
    d = np.linalg.norm(px[:, None, :] - palette[None, :, :], axis=2)
    idx = np.argmin(d, axis=1)
    far = d[np.arange(len(px)), idx] > tolerance
    idx[far] = 0
    return idx.reshape(rgb.shape[:2]).astype(np.uint8), int(far.sum())


def fit_slices(array: np.ndarray, n_slices: int, pad_value: float = 0) -> tuple[np.ndarray, int]:
    """Centre-trim or zero-pad axis 2 to ``n_slices``; returns the array and the index shift of slice 0."""
    n = array.shape[2]
    if n >= n_slices:
        start = (n - n_slices) // 2
        return array[:, :, start:start + n_slices], start
    before = (n_slices - n) // 2
    pad = [(0, 0), (0, 0), (before, n_slices - n - before)]
    return np.pad(array, pad, constant_values=pad_value), -before


def png_case_to_volumes(case_dir: str | os.PathLike[str], reading: PngReading) -> tuple[Volume, Volume, PngCaseReport]:
    """One patient's PNG slices -> (image, labels) Volumes on the same grid (see :class:`PngReading`).

    Array axes: 0 = image column, 1 = image row, 2 = slice (as DICOM). The
    affine treats columns as patient left and rows as posterior (the usual
    axial display).
    """
    colors, spacing, size, n_slices, tolerance = reading.colors, reading.spacing, reading.size, reading.n_slices, reading.tolerance
    d = Path(case_dir)
    ct_dir, mask_dir = d / PNG_CT_DIR, d / PNG_MASK_DIR
    for sub in (ct_dir, mask_dir):
        if not sub.is_dir():
            raise DataError(f"{d}: missing folder {sub.name}/ (layout: <case>/{PNG_CT_DIR}/*.png and <case>/{PNG_MASK_DIR}/*.png)")
    cts = {p.name: p for p in ct_dir.iterdir() if p.suffix.lower() == ".png"}
    masks = {p.name: p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"}
    if not cts:
        raise DataError(f"{ct_dir}: no .png slices found")
    if set(cts) != set(masks):
        only_ct = sorted(set(cts) - set(masks), key=natural_key)[:3]
        only_mask = sorted(set(masks) - set(cts), key=natural_key)[:3]
        raise DataError(f"{d}: CT and MASK slices are not paired by name (only in CT: {only_ct}; only in MASK: {only_mask})")
    names = sorted(cts, key=natural_key)

    images, labels, unmatched = [], [], 0
    for name in names:
        img = read_grey_png(cts[name])
        lab, far = colors_to_labels(read_rgb_png(masks[name]), colors, tolerance)
        if images and img.shape != images[0].shape:
            first = images[0].shape
            raise DataError(f"{cts[name]}: slice is {img.shape[1]}x{img.shape[0]}, the first slice is {first[1]}x{first[0]}")
        if lab.shape != img.shape:
            raise DataError(f"{masks[name]}: mask is {lab.shape[1]}x{lab.shape[0]}, its CT slice is {img.shape[1]}x{img.shape[0]}")
        images.append(img)
        labels.append(lab)
        unmatched += far
    image = np.stack(images, axis=-1).transpose(1, 0, 2)  # (rows, cols, z) -> (cols, rows, z)
    label = np.stack(labels, axis=-1).transpose(1, 0, 2)

    sp = np.asarray(spacing, dtype=np.float64)
    origin = np.zeros(3)
    if size is not None and tuple(size) != image.shape[:2]:
        out_shape = (int(size[0]), int(size[1]), image.shape[2])
        scale = np.array([image.shape[0] / out_shape[0], image.shape[1] / out_shape[1], 1.0])
        image = resize(image.astype(np.float32), out_shape, order=1, anti_aliasing=True, preserve_range=True).astype(np.float32)
        label = resize(label, out_shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.uint8)
        # skimage maps output voxel centre o to input coordinate (o + 0.5) * scale - 0.5
        origin = origin + (scale - 1.0) / 2.0 * sp
        sp = sp * scale
    if n_slices is not None:
        image, shift = fit_slices(image, n_slices)
        label, _ = fit_slices(label, n_slices)
        origin[2] += shift * sp[2]

    lps = np.diag([*sp, 1.0])
    lps[:3, 3] = origin
    affine = LPS_TO_RAS @ lps
    meta = {"source": str(d)}
    return (
        Volume(np.ascontiguousarray(image), affine, dict(meta)),
        Volume(np.ascontiguousarray(label), affine.copy(), dict(meta)),
        PngCaseReport(len(names), unmatched),
    )
