"""The legacy_npy layout (the original code base's ``prostateCT_vol``): PATH/<split>/CT/*.npy,
SEG/*.npy, optional SEG_onehot/*.npy.

Volumes are (D, H, W) arrays with no geometry. We read them the way the original
code base's PNG slices were drawn (radiological display): D = slices (inferior -> superior),
H = image rows (anterior -> posterior), W = image columns (patient right -> left),
i.e. LPS axis order, unit spacing unless given. ``to_legacy_npy_array`` writes any
Volume that way. Files are paired by patient id (file stem), not by listing
order as the original code base did.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.integrity import NonFinitePolicy, check_finite, check_numeric, exc_summary, check_size, check_spacing
from rtseg.io.naming import unpaired
from rtseg.io.orientation import reorient
from rtseg.io.volume import Volume

CT_DIR, SEG_DIR, ONEHOT_DIR = "CT", "SEG", "SEG_onehot"
#: Axis order of the arrays before the (D, H, W) transpose: 0 to patient left, 1 to posterior, 2 to superior.
LEGACY_NPY_AXES = "LPS"


def legacy_npy_affine(spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """RAS+ affine of a (D, H, W) legacy_npy array; ``spacing`` is per array axis (D, H, W)."""
    aff = np.zeros((4, 4))
    aff[2, 0], aff[1, 1], aff[0, 2], aff[3, 3] = spacing[0], -spacing[1], -spacing[2], 1.0
    return aff


def to_legacy_npy_array(volume: Volume) -> np.ndarray:
    """Reorient to LPS axis order and transpose to (D, H, W), the inverse of ``legacy_npy_affine``."""
    return np.ascontiguousarray(reorient(volume, LEGACY_NPY_AXES)[0].array.transpose(2, 1, 0))


def _npy_header(p: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the .npy header, checked against the file length and the memory limit
    before the array is allocated (np.load would trust a header that claims terabytes)."""
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = fh.tell()
    except Exception as exc:  # numpy raises ValueError, SyntaxError, ... for corrupt headers
        raise DataError(f"{p}: not a readable .npy array ({exc_summary(exc)})") from None
    check_numeric(p, dtype)
    if len(shape) != 3:
        raise DataError(f"{p}: expected a 3D (D,H,W) array, found shape {shape}")
    nbytes = check_size(p, shape, dtype.itemsize, "header shape")
    size = p.stat().st_size
    if size - offset < nbytes:
        raise DataError(f"{p}: truncated: header says {shape} {dtype} ({nbytes} bytes of data), file holds {size - offset}")
    return shape, dtype


def read_npy(path: str | os.PathLike[str], spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
             nonfinite: NonFinitePolicy = "error") -> Volume:
    """Read a (D, H, W) legacy_npy array; NaN/inf voxels are an error unless ``nonfinite`` gives their replacement."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    check_spacing(p, spacing, "given spacing (D, H, W)")
    shape, _ = _npy_header(p)
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{p}: not a readable .npy array ({type(exc).__name__})") from None
    if arr.shape != shape:  # cannot happen with numpy's own reader; guards a second header
        raise DataError(f"{p}: header shape {shape} does not match the data read {arr.shape}")
    arr = check_finite(p, arr, nonfinite)
    return Volume(arr, legacy_npy_affine(spacing), {"source": str(p)})


def write_npy(array: np.ndarray, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
    return target


def legacy_npy_stems(folder: Path) -> set[str]:
    """Case ids of a folder's .npy files; hidden ones (an interrupted atomic write's temporary) are not cases."""
    return {p.stem for p in folder.glob("*.npy") if not p.name.startswith(".")}


def legacy_npy_case_ids(split_dir: str | os.PathLike[str]) -> list[str]:
    """Patient ids present in a legacy_npy split, checked for pairing CT <-> SEG."""
    d = Path(split_dir)
    ct_dir, seg_dir = d / CT_DIR, d / SEG_DIR
    if not ct_dir.is_dir():
        raise DataError(f"{d}: missing folder {CT_DIR}/ (legacy_npy layout is <split>/CT/*.npy and <split>/SEG/*.npy)")
    if not seg_dir.is_dir():
        raise DataError(f"{d}: missing folder {SEG_DIR}/ (legacy_npy layout is <split>/CT/*.npy and <split>/SEG/*.npy)")
    cts, segs = legacy_npy_stems(ct_dir), legacy_npy_stems(seg_dir)
    if not cts:
        raise DataError(f"{ct_dir}: no .npy volumes found")
    missing = unpaired(("CT without SEG", cts - segs), ("SEG without CT", segs - cts))
    if missing:
        raise DataError(f"{d}: unpaired files ({missing}); files are paired by identical names")
    return sorted(cts)


def write_legacy_npy_case(split_dir: str | os.PathLike[str], case_id: str, ct: np.ndarray, seg: np.ndarray, n_classes: int | None = None) -> None:
    """Write one patient in the legacy_npy layout (with SEG_onehot when ``n_classes`` is given)."""
    d = Path(split_dir)
    write_npy(ct, d / CT_DIR / f"{case_id}.npy")
    write_npy(seg, d / SEG_DIR / f"{case_id}.npy")
    if n_classes is not None:
        onehot = (np.arange(n_classes)[:, None, None, None] == seg[None]).astype(np.uint8)
        write_npy(onehot, d / ONEHOT_DIR / f"{case_id}.npy")
