"""RTSTRUCT parsing, rasterisation, ROI-name mapping and writing (dciodvfy-valid, round trip)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath
from pydicom.uid import RTStructureSetStorage

from dicom_checks import assert_dciodvfy_clean
from rtseg.errors import ConfigError, DataError
from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from rtseg.io.rtstruct import (
    Contour,
    Roi,
    match_roi_names,
    rasterize_roi,
    read_rtstruct,
    rtstruct_to_labels,
    write_rtstruct,
)
from rtseg.io.volume import Volume

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SERIES = DATA / "dicom-ct-series"
STRIPPED = DATA / "dicom-ct-series-stripped"
RTSS = DATA / "rtstruct-example" / "rtss.dcm"
CLASSES = ["background", "prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right"]
COLORS = [(0, 255, 255), (204, 0, 102), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (only present in the development checkout)")
    return path


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


# ------------------------------------------------------------------ parsing --

def test_read_rtstruct_example_matches_pydicom() -> None:
    rs = read_rtstruct(_need(RTSS))
    ds = pydicom.dcmread(RTSS)
    assert len(rs.rois) == 10
    assert rs.roi_names == [r.ROIName for r in ds.StructureSetROISequence]
    assert {"BODY", "Heart", "Lt Lung", "Breast"} <= set(rs.roi_names)
    by_number = {int(rc.ReferencedROINumber): rc for rc in ds.ROIContourSequence}
    for roi in rs.rois:
        rc = by_number[roi.number]
        assert len(roi.contours) == len(rc.get("ContourSequence", []))
        assert roi.color == tuple(int(v) for v in rc.ROIDisplayColor)
        for ours, theirs in zip(roi.contours, rc.get("ContourSequence", [])):
            assert ours.points.shape == (int(theirs.NumberOfContourPoints), 3)
            np.testing.assert_array_equal(ours.points.ravel(), [float(v) for v in theirs.ContourData])
    assert sum(len(r.contours) for r in rs.rois) == 441
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert rs.frame_of_reference_uids == (ref.FrameOfReferenceUID,)
    series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert rs.referenced_series_uids == (series.SeriesInstanceUID,)
    assert len(rs.referenced_sop_instance_uids) == 98
    ct = pydicom.dcmread(RTSS.parent / "ct.0.dcm", stop_before_pixels=True)
    assert ct.SOPInstanceUID in rs.referenced_sop_instance_uids


def test_read_rtstruct_refuses_ct_slice() -> None:
    with pytest.raises(DataError, match="not an RT Structure Set"):
        read_rtstruct(_need(RTSS.parent / "ct.0.dcm"))


# ------------------------------------------------------------------ names --

@pytest.mark.parametrize(
    ("roi", "cls"),
    [
        ("Bladder", "bladder"), ("BLADDER_O", "bladder"), ("Urinary bladder", "bladder"), ("urinary-bladder", "bladder"),
        ("Prostate", "prostate"), ("RECTUM", "rectum"),
        ("Femur_Head_L", "femoral_head_left"), ("FemoralHead_L", "femoral_head_left"),
        ("Lt femoral head", "femoral_head_left"), ("Femur_Head_R", "femoral_head_right"),
        ("Rt Femoral Head", "femoral_head_right"),
    ],
)
def test_pelvic_aliases(roi: str, cls: str) -> None:
    assert match_roi_names([roi], CLASSES) == {roi: cls}


def test_unrelated_names_are_not_matched() -> None:
    assert match_roi_names(["Rectum_PRV", "CTV_Prostate", "BODY", "Couch"], CLASSES) == {}


def test_openkbp_names_match_whatever_the_class_spelling() -> None:
    rois = ["Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible"]
    classes = ["background", "brainstem", "spinal_cord", "parotid_right", "parotid_left", "esophagus", "larynx", "mandible"]
    assert list(match_roi_names(rois, classes).values()) == classes[1:]
    expected = {"Parotid_R": "RightParotid", "Brain Stem": "Brainstem"}
    assert match_roi_names(["Parotid_R", "Brain Stem"], ["background", *rois]) == expected


def test_user_aliases_and_their_errors() -> None:
    assert match_roi_names(["Blase"], CLASSES, {"bladder": ["blase"]}) == {"Blase": "bladder"}
    with pytest.raises(ConfigError, match="unknown classes"):
        match_roi_names(["x"], CLASSES, {"kidney": ["niere"]})
    with pytest.raises(ConfigError, match="would match both"):
        match_roi_names(["x"], CLASSES, {"rectum": ["Bladder"]})


# ---------------------------------------------------------- rasterisation --

def test_nested_contours_are_xored_on_an_independent_reference() -> None:
    grid = Volume(np.zeros((24, 20, 5), np.int16), np.diag([-2.0, -2.0, 3.0, 1.0]))  # LPS = diag(2, 2, 3)

    def square(half: float, cx: float, cy: float, z: float) -> Contour:
        pts = np.array([[cx - half, cy - half, z], [cx + half, cy - half, z], [cx + half, cy + half, z], [cx - half, cy + half, z]])
        return Contour(pts, "CLOSED_PLANAR")

    z = 6.0  # slice 2
    # odd-mm edges: no voxel centre (even mm) lies on a boundary
    outer, hole, island = square(14.0, 23.0, 19.0, z), square(6.0, 23.0, 19.0, z), square(2.0, 23.0, 19.0, z)
    roi = Roi(1, "ring", None, "", "ORGAN", (outer, hole, island, square(2.0, 23.0, 19.0, 0.1 + 30.0)))
    mask, skipped = rasterize_roi(roi, grid)
    assert skipped == 1  # the contour at z = 30.1 lies outside the 5 slices (0..12 mm)
    ii, jj = np.meshgrid(np.arange(24), np.arange(20), indexing="ij")
    centres = np.column_stack([ii.ravel() * 2.0, jj.ravel() * 2.0])  # voxel centres in LPS mm
    inside = [MplPath(c.points[:, :2]).contains_points(centres).reshape(24, 20) for c in (outer, hole, island)]
    expected = inside[0] ^ inside[1] ^ inside[2]
    assert expected.sum() > 0 and (~expected & inside[0]).sum() > 0
    np.testing.assert_array_equal(mask[:, :, 2], expected)
    assert not mask[:, :, [0, 1, 3, 4]].any()


# ---------------------------------------------------------------- writing --

@pytest.fixture(scope="module")
def real() -> Volume:
    return read_dicom_series(_need(SERIES))


def _phantom_labels(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    x, y, z = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    lab = np.zeros(shape, np.uint8)

    def ellipsoid(c: tuple[float, float, float], r: tuple[float, float, float]) -> np.ndarray:
        return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1

    lab[ellipsoid((250, 250, 20), (45, 35, 14))] = 2  # bladder
    lab[ellipsoid((250, 200, 20), (15, 15, 9))] = 1  # prostate, touching the bladder
    ring = (x - 150) ** 2 + (y - 350) ** 2
    lab[(ring <= 40 ** 2) & (ring >= 18 ** 2) & (np.abs(z - 20) <= 10)] = 3  # rectum as a ring: a hole in every slice
    lab[ellipsoid((380, 380, 12), (22, 22, 8))] = 5
    return lab


@pytest.fixture(scope="module")
def written(real: Volume, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    labels = _phantom_labels(real.shape, real.spacing)
    path = tmp_path_factory.mktemp("rt") / "RS.dcm"
    write_rtstruct(labels, real, CLASSES, COLORS, path)
    return path, labels


@pytest.fixture(scope="module")
def written_xor(written: tuple[Path, np.ndarray], real: Volume) -> Path:
    path = written[0].with_name("RS_xor.dcm")
    write_rtstruct(written[1], real, CLASSES, COLORS, path, holes="xor")
    return path


def test_written_rtstruct_passes_dciodvfy(written: tuple[Path, np.ndarray]) -> None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    assert_dciodvfy_clean(written[0])
    res = subprocess.run([tool, str(written[0])], capture_output=True, text=True, timeout=60)
    assert "RTStructureSet" in (res.stdout + res.stderr).splitlines()


def test_written_rtstruct_content(written: tuple[Path, np.ndarray], real: Volume) -> None:
    ds = pydicom.dcmread(written[0])
    first_ct = pydicom.dcmread(real.meta["dicom"]["files"][0], stop_before_pixels=True)
    assert ds.SOPClassUID == RTStructureSetStorage and ds.Modality == "RTSTRUCT"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPInstanceUID != first_ct.SOPInstanceUID and ds.SeriesInstanceUID != first_ct.SeriesInstanceUID
    assert ds.StudyInstanceUID == first_ct.StudyInstanceUID
    assert ds.PatientID == first_ct.PatientID and ds.PatientName == first_ct.PatientName
    assert ds.Manufacturer == "rtseg" and ds.StructureSetDate and ds.StructureSetTime
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Prostate", "Bladder", "Rectum", "Femur_Head_R"]  # TG-263
    assert [int(r.ROINumber) for r in ds.StructureSetROISequence] == [1, 2, 3, 5]
    assert [list(r.ROIDisplayColor) for r in ds.ROIContourSequence] == [list(COLORS[i]) for i in (0, 1, 2, 4)]
    assert len(ds.RTROIObservationsSequence) == 4
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == first_ct.FrameOfReferenceUID
    series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == first_ct.SeriesInstanceUID
    assert [c.ReferencedSOPInstanceUID for c in series.ContourImageSequence] == real.meta["dicom"]["sop_instance_uids"]
    for rc in ds.ROIContourSequence:
        for c in rc.ContourSequence:
            assert c.ContourGeometricType == "CLOSED_PLANAR"
            assert len(c.ContourData) == 3 * int(c.NumberOfContourPoints)
            assert c.ContourImageSequence[0].ReferencedSOPInstanceUID in real.meta["dicom"]["sop_instance_uids"]


def test_contours_sit_where_simpleitk_puts_the_voxels(written_xor: Path, real: Volume) -> None:
    """Independent geometry check: SimpleITK maps the ring's centre voxel to patient coordinates."""
    assert_dciodvfy_clean(written_xor)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SERIES)))
    img = reader.Execute()
    rs = read_rtstruct(written_xor)
    ring = rs.roi("Rectum")
    sp = real.spacing
    k = int(round(20 / sp[2]))
    centre = img.TransformContinuousIndexToPhysicalPoint((150 / sp[0], 350 / sp[1], float(k)))
    on_slice = [c for c in ring.contours if abs(c.points[0, 2] - centre[2]) < 1e-3]
    assert len(on_slice) == 2  # outer boundary and the hole
    areas = []
    for c in on_slice:
        x, y = c.points[:, 0], c.points[:, 1]
        cross = x * np.roll(y, -1) - np.roll(x, -1) * y
        area = cross.sum() / 2
        centroid = [((x + np.roll(x, -1)) * cross).sum() / (6 * area), ((y + np.roll(y, -1)) * cross).sum() / (6 * area)]
        np.testing.assert_allclose(centroid, centre[:2], atol=0.5)
        areas.append(abs(area))
    radii = sorted(np.sqrt(np.array(areas) / np.pi))
    assert radii[0] == pytest.approx(18, abs=1.0) and radii[1] == pytest.approx(40, abs=1.0)


def test_roundtrip_dice(written: tuple[Path, np.ndarray], real: Volume) -> None:
    path, labels = written
    back, report = rtstruct_to_labels(path, real, CLASSES)
    assert report.unmapped == [] and report.missing_classes == ["femoral_head_left"] and report.skipped_contours == 0
    for c in (1, 2, 3, 5):
        assert _dice(labels == c, back.array == c) >= 0.95, CLASSES[c]
    # the ring's hole came back as background
    assert back.array[int(150 / real.spacing[0]), int(350 / real.spacing[1]), 10] == 0
    np.testing.assert_allclose(back.affine, real.affine)


def test_labels_volume_in_another_axis_order_is_reoriented(real: Volume, tmp_path: Path) -> None:
    labels = _phantom_labels(real.shape, real.spacing)
    img = nib.Nifti1Image(labels, real.affine)
    ras = nib.as_closest_canonical(img)  # flips the two in-plane axes of this LPS-ordered grid
    assert not np.allclose(ras.affine, real.affine)
    moved = Volume(np.asarray(ras.dataobj).transpose(2, 0, 1), ras.affine[:, [2, 0, 1, 3]])
    p1, p2 = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_rtstruct(labels, real, CLASSES, COLORS, p1)
    write_rtstruct(moved, real, CLASSES, COLORS, p2)
    assert_dciodvfy_clean(p2)
    a, b = pydicom.dcmread(p1), pydicom.dcmread(p2)
    for ra, rb in zip(a.ROIContourSequence, b.ROIContourSequence):
        assert [list(c.ContourData) for c in ra.ContourSequence] == [list(c.ContourData) for c in rb.ContourSequence]
    shifted = Volume(labels, real.affine @ np.array([[1, 0, 0, 3], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    with pytest.raises(DataError, match="not on the CT grid"):
        write_rtstruct(shifted, real, CLASSES, COLORS, tmp_path / "c.dcm")
    assert not (tmp_path / "c.dcm").exists()


def test_stripped_series_refused_without_writing(tmp_path: Path) -> None:
    series = read_dicom_series(_need(STRIPPED))
    out = tmp_path / "RS.dcm"
    labels = np.zeros(series.shape, np.uint8)
    labels[200:260, 200:260, 5:9] = 2
    with pytest.raises(DataError, match="20 of 20 CT slices have no SOP Instance UID"):
        write_rtstruct(labels, series, CLASSES, COLORS, out)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------- synthetic small series --

@pytest.fixture()
def small(tmp_path: Path) -> tuple[Volume, np.ndarray]:
    aff = np.diag([-1.5, -1.5, 2.0, 1.0])
    aff[:3, 3] = (20.0, 30.0, -10.0)
    write_dicom_series(Volume(np.zeros((32, 28, 8), np.int16), aff), tmp_path / "ct",
                       patient_name="Doe^Jane", patient_id="PID-98765")
    series = read_dicom_series(tmp_path / "ct")
    labels = np.zeros(series.shape, np.uint8)
    labels[8:20, 6:18, 2:6] = 2
    labels[10:14, 20:25, 3:5] = 3
    return series, labels


def test_write_argument_errors(small: tuple[Volume, np.ndarray], tmp_path: Path) -> None:
    series, labels = small
    out = tmp_path / "RS.dcm"
    with pytest.raises(DataError, match="label values \\[7\\]"):
        bad = labels.copy()
        bad[0, 0, 0] = 7
        write_rtstruct(bad, series, CLASSES, COLORS, out)
    with pytest.raises(DataError, match="3 colours given for 5 organ classes"):
        write_rtstruct(labels, series, CLASSES, COLORS[:3], out)
    with pytest.raises(DataError, match="2 ROI names given"):
        write_rtstruct(labels, series, CLASSES, COLORS, out, names=["a", "b"])
    with pytest.raises(DataError, match="does not match the CT series shape"):
        write_rtstruct(labels[:, :, :4], series, CLASSES, COLORS, out)
    assert not out.exists()


def test_custom_roi_names_map_back_through_aliases(small: tuple[Volume, np.ndarray], tmp_path: Path) -> None:
    series, labels = small
    out = write_rtstruct(labels, series, CLASSES, COLORS, tmp_path / "RS.dcm",
                         names=["Prostata", "Urinary Bladder", "RECTUM_O", "Femur_Head_L", "Femur_Head_R"])
    assert_dciodvfy_clean(out)
    back, report = rtstruct_to_labels(out, series, CLASSES)
    assert report.mapped == {"Urinary Bladder": "bladder", "RECTUM_O": "rectum"}
    np.testing.assert_array_equal(back.array, labels)


def test_rtstruct_of_another_scan_is_refused(small: tuple[Volume, np.ndarray], tmp_path: Path) -> None:
    series, labels = small
    out = write_rtstruct(labels, series, CLASSES, COLORS, tmp_path / "RS.dcm")
    other_dir = tmp_path / "other"
    write_dicom_series(Volume(np.zeros(series.shape, np.int16), series.affine), other_dir)
    with pytest.raises(DataError, match="Frame of Reference") as info:
        rtstruct_to_labels(out, read_dicom_series(other_dir), CLASSES)
    assert "Doe" not in str(info.value) and "PID-98765" not in str(info.value)
    same_frame = tmp_path / "same_frame"
    write_dicom_series(Volume(np.zeros(series.shape, np.int16), series.affine), same_frame,
                       frame_of_reference_uid=series.meta["dicom"]["frame_of_reference_uid"])
    with pytest.raises(DataError, match="refers to CT series"):
        rtstruct_to_labels(out, read_dicom_series(same_frame), CLASSES)
