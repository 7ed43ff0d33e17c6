"""NIfTI read/write (nibabel), with the header checked before the voxels are read."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.integrity import NonFinitePolicy, check_affine, check_finite, check_numeric, exc_summary, check_size, check_spacing
from rtseg.io.volume import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
XFORM_CODES = (0, 1, 2, 3, 4, 5)
"""unknown, scanner, aligned, Talairach, MNI, template (NIfTI-1 and its 2019 addition)."""


def is_nifti(path: str | os.PathLike[str]) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def _header_shape(p: Path, img: nib.Nifti1Pair) -> tuple[int, int, int]:
    """The 3D shape a volume will have (a 4D file with one volume is squeezed), refused if too large."""
    hdr = img.header
    shape = tuple(int(s) for s in hdr.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{p}: expected a 3D volume, found shape {shape} (header dim[1:{len(shape) + 1}])")
    dtype = hdr.get_data_dtype()
    check_numeric(p, dtype)
    slope, inter = hdr.get_slope_inter()  # (None, None) when the file is not scaled
    scaled = slope is not None and (float(slope), float(inter or 0.0)) != (1.0, 0.0)
    check_size(p, shape, 8 if scaled else dtype.itemsize, "header dim[1:4]")
    return shape  # type: ignore[return-value]


def _raw_header(p: Path, img: nib.Nifti1Pair) -> nib.Nifti1Header:
    """The header as stored: nibabel's loader silently 'fixes' zero/negative pixdim to 1 mm and unknown
    xform codes to 0, which would hide exactly what must be refused."""
    with nib.openers.ImageOpener(str(p)) as fh:
        return type(img.header).from_fileobj(fh, check=False)


def _geometry(p: Path, img: nib.Nifti1Pair) -> np.ndarray:
    """The voxel-to-world affine the header states; refused when it states none or a degenerate one."""
    raw = _raw_header(p, img)
    if raw.is_single and float(raw["vox_offset"]) < raw.single_vox_offset:
        raise DataError(f"{p}: header vox_offset = {float(raw['vox_offset']):g} points inside the header "
                        f"(voxels start at byte {raw.single_vox_offset} or later in a .nii)")
    sform_code, qform_code = int(raw["sform_code"]), int(raw["qform_code"])
    for name, code in (("sform_code", sform_code), ("qform_code", qform_code)):
        if code not in XFORM_CODES:
            raise DataError(f"{p}: header {name} = {code} is not a NIfTI transform code (expected 0-5)")
    if sform_code == 0 and qform_code == 0:
        raise DataError(
            f"{p}: header has qform_code = 0 and sform_code = 0, so the voxel-to-patient geometry is unknown; "
            "write the file with its qform or sform set (e.g. convert it again from the DICOM series)"
        )
    check_spacing(p, raw["pixdim"][1:4].tolist(), "header pixdim[1:4]")
    field = f"sform (sform_code {sform_code})" if sform_code else f"qform (qform_code {qform_code})"
    affine = np.asarray(img.affine, dtype=np.float64)  # same as the stored one now; qfac 0 is read as 1 per nifti1.h
    check_affine(p, affine, field)
    return affine


def read_nifti(path: str | os.PathLike[str], dtype: np.dtype | type | None = None,
               nonfinite: NonFinitePolicy = "error") -> Volume:
    """Read a 3D NIfTI; a 4D file with one volume is squeezed, anything else is refused.

    The header's geometry (qform/sform, pixdim) and size are checked before the
    voxels are read; NaN/inf voxels are an error unless ``nonfinite`` gives the
    value to put in their place (with a warning).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    try:
        img = nib.load(str(p))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{p}: not a readable NIfTI file ({exc_summary(exc)})") from None
    if not isinstance(img, nib.Nifti1Pair):
        raise DataError(f"{p}: not a NIfTI file (nibabel reads it as {type(img).__name__})")
    try:
        shape = _header_shape(p, img)
        affine = _geometry(p, img)
        data = np.asanyarray(img.dataobj).reshape(shape)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{p}: not a readable NIfTI file ({exc_summary(exc)})") from None
    check_numeric(p, data.dtype)
    data = check_finite(p, data, nonfinite)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return Volume(np.ascontiguousarray(data), affine, {"source": str(p)})


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


def write_nifti_channels(channels: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str], slope: float = 1.0,
                         description: str = "") -> Path:
    """Write (C, X, Y, Z) values as one 4D NIfTI (X, Y, Z, C) on ``affine``'s grid, atomically.

    ``slope`` becomes ``scl_slope`` (stored value x slope = value), e.g. 1/255 for uint8
    probabilities; ``description`` goes into ``descrip`` (80 bytes, cut beyond)."""
    arr = np.moveaxis(np.asarray(channels), 0, -1)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_data_dtype(arr.dtype)
    img.header.set_slope_inter(float(slope), 0.0)
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    target = Path(path)
    with atomic_path(target) as tmp:
        nib.save(img, str(tmp))
    return target
