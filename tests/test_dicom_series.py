"""DICOM CT series reading: geometry against SimpleITK, and every refused kind of bad series."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rtseg.errors import DataError
from rtseg.io.dicom.series import list_dicom_series, read_dicom_series, write_dicom_series
from rtseg.io.volume import Volume

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SERIES = DATA / "dicom-ct-series"
STRIPPED = DATA / "dicom-ct-series-stripped"
FLIP = np.diag([-1.0, -1.0, 1.0])
NAME, PID = "Doe^Jane", "PID-98765"


def _need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"shared test data not found at {path} (only present in the development checkout)")
    return path


def _sitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _assert_matches_sitk(vol: Volume, img: sitk.Image) -> None:
    np.testing.assert_allclose(FLIP @ np.asarray(vol.origin), img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.spacing, img.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(FLIP @ vol.direction, np.reshape(img.GetDirection(), (3, 3)), atol=1e-4)
    ref = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    assert vol.shape == ref.shape
    np.testing.assert_array_equal(vol.array.astype(np.float64), ref.astype(np.float64))


def _volume(shape=(12, 10, 6), spacing=(0.8, 0.9, 2.5), seed=0, affine=None) -> Volume:
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 1500, size=shape).astype(np.int16)
    aff = affine if affine is not None else np.diag([*spacing, 1.0])
    if affine is None:
        aff[:3, 3] = (-30.0, 20.0, -100.0)
    return Volume(arr, aff)


def _series(tmp_path: Path, name: str = "ct", **kw) -> Path:
    folder = tmp_path / name
    write_dicom_series(_volume(**kw), folder, patient_name=NAME, patient_id=PID)
    return folder


def _edit(path: Path, **attrs) -> None:
    ds = pydicom.dcmread(path)
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(path)


def _error(folder: Path, **kw) -> str:
    with pytest.raises(DataError) as info:
        read_dicom_series(folder, **kw)
    msg = str(info.value)
    assert NAME not in msg and PID not in msg and "Jane" not in msg
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------ real data --

@pytest.fixture(scope="module")
def real() -> Volume:
    return read_dicom_series(_need(SERIES))


def test_real_series_geometry_and_values_equal_simpleitk(real: Volume) -> None:
    _assert_matches_sitk(real, _sitk(SERIES))
    assert real.array.dtype == np.int16  # slope 1, intercept -1024: exact in int16
    assert real.shape == (512, 512, 20)


def test_real_series_meta_for_rtstruct(real: Volume) -> None:
    d = real.meta["dicom"]
    files = [Path(f) for f in d["files"]]
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    assert z == sorted(z)  # array order = ascending along the normal (+z here)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert d["sop_instance_uids"][0] == first.SOPInstanceUID
    assert d["frame_of_reference_uid"] == first.FrameOfReferenceUID
    assert d["series_instance_uid"] == first.SeriesInstanceUID
    assert len(set(d["sop_instance_uids"])) == 20
    # patient attributes are kept for the RTSTRUCT but never printed
    assert d["patient_study"]["PatientID"] == first.PatientID
    assert str(first.PatientID) not in repr(real.meta) and str(first.PatientName) not in repr(real.meta)
    with pytest.raises(TypeError):
        json.dumps(real.meta)


def test_stripped_series_reads_same_image_without_uids(real: Volume) -> None:
    vol = read_dicom_series(_need(STRIPPED))
    np.testing.assert_array_equal(vol.array, real.array)
    np.testing.assert_allclose(vol.affine, real.affine)
    assert all(uid == "" for uid in vol.meta["dicom"]["sop_instance_uids"])


# ------------------------------------------------------------- written series --

def test_written_oblique_series_roundtrips_and_equals_simpleitk(tmp_path: Path) -> None:
    theta = np.radians(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.7, 0.9, 3.0])
    aff[:3, 3] = (10.0, -5.0, 40.0)
    vol = _volume(affine=aff)
    folder = tmp_path / "oblique"
    write_dicom_series(vol, folder, rescale=(0.5, -1024.0))
    back = read_dicom_series(folder)
    assert back.array.dtype == np.float32  # slope 0.5 is not exact in int16
    np.testing.assert_allclose(back.affine, aff, atol=1e-4)
    np.testing.assert_allclose(back.array, vol.array, atol=0.5)
    _assert_matches_sitk(back, _sitk(folder))


def test_left_handed_volume_comes_back_with_slices_reversed(tmp_path: Path) -> None:
    aff = np.diag([1.0, 1.0, -2.0, 1.0])
    vol = _volume(affine=aff)
    folder = tmp_path / "lh"
    write_dicom_series(vol, folder)
    back = read_dicom_series(folder)
    np.testing.assert_array_equal(back.array, vol.array[:, :, ::-1])
    np.testing.assert_allclose(back.affine[:3, 2], [0, 0, 2.0])
    np.testing.assert_allclose(back.affine[:3, 3], aff[:3, 3] + aff[:3, 2] * 5)


def test_non_dicom_files_and_rtstruct_are_ignored(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    (folder / "notes.txt").write_text("scan notes")
    assert read_dicom_series(folder).shape == (12, 10, 6)


# ------------------------------------------------------------------ bad series --

def test_missing_slice_reports_gap(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    (folder / "CT_0003.dcm").unlink()
    msg = _error(folder)
    assert "gap of 5.000 mm" in msg and "expected 2.500 mm" in msg and "missing" in msg


def test_gantry_tilt_refused(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    for k, f in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        _edit(f, ImagePositionPatient=[x, y + k * 2.5 * np.tan(np.radians(15)), z])
    msg = _error(folder)
    assert "gantry tilt of about 15.0 degrees" in msg


def test_mixed_sizes_refused(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    f = folder / "CT_0002.dcm"
    _edit(f, Rows=8, Columns=8, PixelData=np.zeros((8, 8), np.int16).tobytes())
    msg = _error(folder)
    assert "mixed sizes" in msg and "10x12 (5 slices)" in msg and "8x8 (1 slice)" in msg


def test_mixed_orientation_refused(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    _edit(folder / "CT_0004.dcm", ImageOrientationPatient=[0, 1, 0, 1, 0, 0])
    assert "mixed orientation" in _error(folder)


def test_duplicate_position_refused(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    pos = pydicom.dcmread(folder / "CT_0001.dcm").ImagePositionPatient
    _edit(folder / "CT_0002.dcm", ImagePositionPatient=pos)
    assert "same position" in _error(folder)


def test_mr_modality_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mr"
    write_dicom_series(_volume(), folder, modality="MR", patient_name=NAME, patient_id=PID)
    assert "modality is MR, expected CT" in _error(folder)


def test_two_series_listed_then_chosen_by_uid(tmp_path: Path) -> None:
    root = tmp_path / "patient"
    _series(root, "a")
    _series(root, "b", shape=(8, 8, 4), seed=1)
    infos = list_dicom_series(root)
    assert sorted(i.n_slices for i in infos) == [4, 6]
    msg = _error(root)
    assert "2 image series" in msg and "--series-uid" in msg
    for info in infos:
        assert info.uid in msg and f"{info.n_slices} slices" in msg
    small = next(i for i in infos if i.n_slices == 4)
    assert read_dicom_series(root, series_uid=small.uid).shape == (8, 8, 4)
    assert "no series with SeriesInstanceUID 1.2.3" in _error(root, series_uid="1.2.3")


def test_no_dicom_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    assert "no DICOM files found" in _error(tmp_path)
    assert "folder not found" in _error(tmp_path / "absent")


def test_unreadable_file_named(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    (folder / "CT_0009.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 7)
    msg = _error(folder)
    assert "CT_0009.dcm" in msg and "not a readable DICOM file" in msg


def test_truncated_pixel_data_named(tmp_path: Path) -> None:
    folder = _series(tmp_path)
    f = folder / "CT_0001.dcm"
    f.write_bytes(f.read_bytes()[:-100])
    msg = _error(folder)
    assert "CT_0001.dcm" in msg
