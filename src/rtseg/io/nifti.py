"""NIfTI read/write (nibabel)."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.volume import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | os.PathLike[str], dtype: np.dtype | type | None = None) -> Volume:
    """Read a 3D NIfTI; a 4D file with one volume is squeezed, anything else is refused."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{p}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{p}: expected a 3D volume, found shape {data.shape}")
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return Volume(np.ascontiguousarray(data), img.affine.astype(np.float64), {"source": str(p)})


def write_nifti(volume: Volume, path: str | os.PathLike[str], dtype: np.dtype | type | None = None) -> Path:
    """Write atomically; labels are usually written as uint8."""
    arr = volume.array if dtype is None else volume.array.astype(dtype, copy=False)
    img = nib.Nifti1Image(arr, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    target = Path(path)
    with atomic_path(target) as tmp:
        nib.save(img, str(tmp))
    return target
