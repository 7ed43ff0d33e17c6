"""Input integrity at the readers: non-finite voxels, unknown or degenerate geometry, headers larger than memory.

Every case is a small generated file; the expected error is checked for the file, the header field
or voxel it names, and the expected position is computed independently (np.argwhere)."""
from __future__ import annotations

import gzip
import logging
import struct
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from rtseg.config.schema import DatasetConfig
from rtseg.data.datasets import list_cases, load_case
from rtseg.errors import DataError
from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from rtseg.io.integrity import DEFAULT_MAX_BYTES, MAX_BYTES_ENV, check_finite
from rtseg.io.nifti import read_nifti
from rtseg.io.legacy_npy import read_npy, write_legacy_npy_case
from rtseg.io.volume import Volume, affine_from_spacing

AFFINE = affine_from_spacing((0.8, 0.9, 2.5), (-10.0, 20.0, 30.0))


def ct(shape=(6, 5, 4), dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 200, shape).astype(dtype)


def save_nifti(path: Path, arr: np.ndarray, affine=AFFINE, edit=None) -> Path:
    """Write a NIfTI byte for byte (header fields as ``edit`` sets them, with no fix-ups by nibabel)."""
    img = nib.Nifti1Image(arr, affine)
    hdr = img.header
    hdr["vox_offset"] = 352
    if edit:
        edit(hdr)
    data = hdr.structarr.tobytes() + b"\0" * 4 + np.asarray(arr, hdr.get_data_dtype()).tobytes(order="F")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def first_bad(arr: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])


# --- non-finite voxels --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nifti_non_finite_voxels_are_an_error_naming_file_count_and_first_voxel(tmp_path, bad):
    arr = ct()
    arr[4, 1, 3] = bad
    arr[2, 3, 1] = bad
    path = save_nifti(tmp_path / "ct.nii", arr)
    with pytest.raises(DataError) as err:
        read_nifti(path)
    msg = str(err.value)
    assert str(path) in msg and "2 of 120 voxels are NaN or infinite" in msg
    assert f"first at voxel {first_bad(arr)}" in msg and first_bad(arr) == (2, 3, 1)


def test_nifti_non_finite_replaced_by_a_stated_value_with_a_warning(tmp_path, caplog):
    arr = ct()
    arr[1, 2, 3] = np.nan
    path = save_nifti(tmp_path / "ct.nii.gz", arr)
    with caplog.at_level(logging.WARNING):
        vol = read_nifti(path, nonfinite=-1000.0)
    expected = arr.copy()
    expected[1, 2, 3] = -1000.0
    np.testing.assert_array_equal(vol.array, expected)
    assert "1 of 120 voxels are NaN or infinite" in caplog.text and "replaced by -1000" in caplog.text
    with pytest.raises(ValueError):
        read_nifti(path, nonfinite=float("nan"))


def test_npy_non_finite_voxels_error_and_replacement(tmp_path, caplog):
    arr = ct((4, 5, 6))
    arr[3, 0, 5] = np.nan
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(DataError, match=r"a\.npy: 1 of 120 voxels are NaN or infinite \(first at voxel \(3, 0, 5\): nan\)"):
        read_npy(tmp_path / "a.npy")
    with caplog.at_level(logging.WARNING):
        vol = read_npy(tmp_path / "a.npy", nonfinite=0.0)
    assert vol.array[3, 0, 5] == 0 and np.isfinite(vol.array).all() and "replaced by 0" in caplog.text


def test_training_data_with_a_nan_voxel_is_refused_when_the_case_is_loaded(tmp_path):
    """The legacy_npy layout (training data): the check sits in read_npy, so data.datasets gets it."""
    img = ct((8, 8, 8))
    img[5, 6, 7] = np.nan
    write_legacy_npy_case(tmp_path / "train", "p01", img, np.zeros((8, 8, 8), np.uint8))
    (ref,) = list_cases(DatasetConfig(NAME="prostateCT_vol", PATH=str(tmp_path), N_CLASSES=2), "train")
    with pytest.raises(DataError, match=r"p01\.npy: 1 of 512 voxels are NaN or infinite \(first at voxel \(5, 6, 7\)"):
        load_case(ref, n_classes=2)


def test_integer_volumes_pass_untouched():
    arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    assert check_finite("x", arr) is arr


# --- NIfTI geometry -----------------------------------------------------------------------------

def test_nifti_without_qform_or_sform_is_refused(tmp_path):
    def no_xform(hdr):
        hdr["qform_code"], hdr["sform_code"] = 0, 0

    path = save_nifti(tmp_path / "ct.nii", ct(), edit=no_xform)
    with pytest.raises(DataError, match=r"ct\.nii: header has qform_code = 0 and sform_code = 0.*geometry is unknown"):
        read_nifti(path)


@pytest.mark.parametrize("pixdim", [(0.0, 1.0, 1.0), (1.0, -2.0, 1.0), (1.0, 1.0, np.nan), (np.inf, 1.0, 1.0)])
def test_nifti_zero_negative_or_non_finite_pixdim_is_refused(tmp_path, pixdim):
    """nibabel would 'fix' zero pixdim to 1 mm and negative ones to their absolute value; we refuse."""
    def spacing(hdr):
        hdr["pixdim"][1:4] = pixdim

    path = save_nifti(tmp_path / "ct.nii", ct(), edit=spacing)
    with pytest.raises(DataError, match=r"header pixdim\[1:4\] = .*must be positive and finite"):
        read_nifti(path)


def test_nifti_degenerate_sform_is_refused(tmp_path):
    def flat(hdr):
        hdr["qform_code"] = 0
        hdr["srow_y"] = [0.0, 0.0, 0.0, 5.0]  # a zero axis: all rows at one y

    with pytest.raises(DataError, match=r"voxel sizes from the sform \(sform_code 2\) = \(0.8, 0, 2.5\)"):
        read_nifti(save_nifti(tmp_path / "ct.nii", ct(), edit=flat))

    def parallel(hdr):
        hdr["qform_code"] = 0
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0]

    with pytest.raises(DataError, match=r"sform \(sform_code 2\) axes are \(nearly\) parallel"):
        read_nifti(save_nifti(tmp_path / "ct2.nii", ct(), edit=parallel))


def test_nifti_unknown_xform_code_or_voxel_offset_inside_the_header_is_refused(tmp_path):
    def code(hdr):
        hdr["sform_code"] = 9

    with pytest.raises(DataError, match=r"sform_code = 9 is not a NIfTI transform code"):
        read_nifti(save_nifti(tmp_path / "ct.nii", ct(), edit=code))

    def offset(hdr):
        hdr["vox_offset"] = 0  # nibabel would read the header bytes as voxels

    with pytest.raises(DataError, match=r"vox_offset = 0 points inside the header"):
        read_nifti(save_nifti(tmp_path / "ct.nii", ct(), edit=offset))


def test_valid_nifti_reads_with_its_affine(tmp_path):
    arr = ct()
    vol = read_nifti(save_nifti(tmp_path / "ct.nii", arr))
    np.testing.assert_array_equal(vol.array, arr)
    np.testing.assert_allclose(vol.affine, AFFINE)


# --- sizes beyond memory ------------------------------------------------------------------------

def refused_without_allocating(read, match: str) -> None:
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DataError, match=match):
            read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20 and time.perf_counter() - t0 < 5


def test_nifti_header_larger_than_memory_is_refused_before_allocation(tmp_path):
    def huge(hdr):
        hdr["dim"][1:4] = (30000, 30000, 30000)

    path = save_nifti(tmp_path / "huge.nii", ct((2, 2, 2)), edit=huge)
    refused_without_allocating(lambda: read_nifti(path), r"huge\.nii: header dim\[1:4\] = \(30000, 30000, 30000\) of 4-byte voxels "
                               r"is 1\.01e\+05 GiB, over the 16 GiB limit")


def test_npy_header_larger_than_memory_is_refused_before_allocation(tmp_path):
    path = tmp_path / "huge.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (10**5, 10**5, 10**4)})
        fh.write(b"\0" * 64)
    refused_without_allocating(lambda: read_npy(path), r"huge\.npy: header shape = \(100000, 100000, 10000\) of 8-byte voxels")


def test_memory_limit_is_set_by_the_environment(tmp_path, monkeypatch):
    path = save_nifti(tmp_path / "ct.nii", ct())  # 480 bytes of float32
    monkeypatch.setenv(MAX_BYTES_ENV, "479")
    with pytest.raises(DataError, match=rf"over the .* GiB limit for one volume \(set {MAX_BYTES_ENV} to raise it\)"):
        read_nifti(path)
    monkeypatch.setenv(MAX_BYTES_ENV, "480")
    assert read_nifti(path).shape == (6, 5, 4)
    monkeypatch.setenv(MAX_BYTES_ENV, "lots")
    with pytest.raises(DataError, match=rf"{MAX_BYTES_ENV}='lots': expected a number of bytes"):
        read_nifti(path)
    assert DEFAULT_MAX_BYTES == 16 * 2**30


def test_npy_truncated_pickled_or_complex_is_refused(tmp_path):
    np.save(tmp_path / "ok.npy", ct((3, 3, 3)))
    data = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-9])
    with pytest.raises(DataError, match=r"cut\.npy: truncated: header says \(3, 3, 3\) float32 \(108 bytes of data\), file holds 99"):
        read_npy(tmp_path / "cut.npy")
    np.save(tmp_path / "obj.npy", np.empty((2, 2, 2), dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: voxel type object is not a grey-level number"):
        read_npy(tmp_path / "obj.npy")
    np.save(tmp_path / "c.npy", np.zeros((2, 2, 2), np.complex64))
    with pytest.raises(DataError, match="voxel type complex64"):
        read_npy(tmp_path / "c.npy")
    with pytest.raises(DataError, match=r"given spacing \(D, H, W\) = \(1, 0, 1\)"):
        read_npy(tmp_path / "ok.npy", spacing=(1.0, 0.0, 1.0))


# --- DICOM --------------------------------------------------------------------------------------

@pytest.fixture
def series(tmp_path) -> Path:
    vol = Volume(np.random.default_rng(1).integers(-1000, 1000, (8, 6, 4)).astype(np.int16), AFFINE)
    write_dicom_series(vol, tmp_path / "ct")
    return tmp_path / "ct"


def set_raw(path: Path, keyword: str, value: bytes) -> None:
    """Store ``value`` as the element's bytes, as a broken exporter would (pydicom would refuse to set it)."""
    ds = pydicom.dcmread(path)
    tag = pydicom.datadict.tag_for_keyword(keyword)
    vr = pydicom.datadict.dictionary_VR(tag)
    value += b" " * (len(value) % 2)
    ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    ds.save_as(path, enforce_file_format=False)


@pytest.mark.parametrize("keyword, value, match", [
    ("PixelSpacing", b"0\\0.8", r"PixelSpacing = \(0, 0.8\): voxel spacing must be positive"),
    ("PixelSpacing", b"-0.9\\0.8", r"PixelSpacing = \(-0.9, 0.8\)"),
    ("ImageOrientationPatient", b"1\\0\\0\\0\\nan\\0", r"ImageOrientationPatient missing or malformed.*expected 6 finite numbers"),
    ("ImagePositionPatient", b"inf\\0\\0", r"ImagePositionPatient missing or malformed.*expected 3 finite numbers"),
    ("RescaleSlope", b"nan", r"RescaleSlope = .*nan.*: expected a finite number"),
    ("RescaleSlope", b"0", r"RescaleSlope = 0 maps every pixel to"),
    ("RescaleSlope", b"1e38", r"\(RescaleSlope 1e\+38, RescaleIntercept 0\): .* voxels are NaN or infinite"),
    ("Rows", struct.pack("<H", 0), r"Rows = 0: expected a whole number >= 1"),
])
def test_dicom_absurd_header_values_are_refused_naming_file_and_tag(series, keyword, value, match):
    target = sorted(series.glob("*.dcm"))[1]
    for path in sorted(series.glob("*.dcm")) if keyword == "PixelSpacing" else [target]:  # else "mixed spacing"
        set_raw(path, keyword, value)
    with pytest.raises(DataError, match=match) as err:
        read_dicom_series(series)
    assert ("CT_0000.dcm" if keyword == "PixelSpacing" else target.name) in str(err.value)


def test_dicom_series_larger_than_memory_is_refused_before_allocation(series, monkeypatch):
    monkeypatch.setenv(MAX_BYTES_ENV, str(8 * 6 * 4 * 4 - 1))
    with pytest.raises(DataError, match=r"Columns x Rows x slices = \(8, 6, 4\) of 4-byte voxels"):
        read_dicom_series(series)


def test_single_slice_without_slice_spacing_is_refused(tmp_path):
    """A lone slice has no neighbour to take the spacing from; rtseg used to invent 1 mm."""
    write_dicom_series(Volume(np.zeros((4, 4, 1), np.int16), AFFINE), tmp_path / "one")
    (path,) = (tmp_path / "one").glob("*.dcm")
    assert read_dicom_series(tmp_path / "one").spacing[2] == pytest.approx(2.5)
    ds = pydicom.dcmread(path)
    del ds.SliceThickness
    ds.save_as(path)
    with pytest.raises(DataError, match="single-slice series needs SpacingBetweenSlices or SliceThickness"):
        read_dicom_series(tmp_path / "one")


# --- no unpickling ------------------------------------------------------------------------------

class _Planted:
    """Unpickling this runs code (creates a file): what a malicious checkpoint or .npy would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_and_npy_with_pickled_code_are_refused_without_running_it(tmp_path):
    import pickle

    import torch

    from rtseg.io.checkpoint import load_checkpoint

    marker = tmp_path / "code-ran"
    torch.save({"rtseg_format": 1, "model": _Planted(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match=r"evil\.pt: found a PyTorch file that pickles Python objects \(\w[\w.]*\)"):
        load_checkpoint(tmp_path / "evil.pt")
    arr = np.empty((1, 1, 1), dtype=object)
    arr[0, 0, 0] = _Planted(str(marker))
    np.save(tmp_path / "evil.npy", arr, allow_pickle=True)
    with pytest.raises(DataError, match=r"evil\.npy: voxel type object"):
        read_npy(tmp_path / "evil.npy")
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Planted(str(marker))))  # the payload is real: unpickling does run it
    assert marker.exists()


def test_json_side_file_that_is_binary_or_absurdly_nested_is_refused(tmp_path):
    from rtseg.io.jsonfile import read_json

    (tmp_path / "splits.json").write_bytes(b'{"train": ["a"\xff]}')
    with pytest.raises(DataError, match=r"splits\.json: not valid JSON \(not UTF-8 text: byte 0xff at offset 14\)"):
        read_json(tmp_path / "splits.json", "DATASET.SPLITS")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"deep\.json: not valid JSON \(nested too deeply\)"):
        read_json(tmp_path / "deep.json", "DATASET.SPLITS")


@pytest.mark.parametrize("damage", ["truncated pixels", "garbage after the preamble"])
def test_corrupt_slice_deep_inside_a_series_is_named(series, damage):
    """The middle of the series, not the first file read: the error names the broken slice."""
    bad = sorted(series.glob("*.dcm"))[2]
    data = bad.read_bytes()
    bad.write_bytes(data[:-100] if damage == "truncated pixels" else data[:132] + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=rf"{bad.name}: (pixel data cannot be decoded|not a readable DICOM file)"):
        read_dicom_series(series)


def test_volume_refuses_a_non_finite_affine():
    aff = np.eye(4)
    aff[0, 3] = np.nan
    with pytest.raises(ValueError, match="Volume affine must be finite"):
        Volume(np.zeros((2, 2, 2)), aff)


def test_nifti_qform_only_with_qfac_zero_reads_as_the_standard_says(tmp_path):
    """nifti1.h: a qfac (pixdim[0]) other than -1 is taken as 1; such files are sloppy but not broken."""
    def qform_only(hdr):
        hdr.set_qform(AFFINE, code=1)
        hdr["sform_code"] = 0
        hdr["pixdim"][0] = 0

    vol = read_nifti(save_nifti(tmp_path / "ct.nii", ct(), edit=qform_only))
    np.testing.assert_allclose(vol.affine, AFFINE, atol=1e-6)
