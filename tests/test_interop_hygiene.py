"""What planning systems check when they import an RTSTRUCT: DS lengths, references copied from the CT,
ROI numbers, contour sizes, patient orientation; hole encodings; TG-263 names; simplification tolerance."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dicom_checks import assert_dciodvfy_clean
from interop_data import CLASSES, COLORS, fill_independent, need_series, organ_labels
from rtseg.cli import main as cli_main
from rtseg.errors import ConfigError, DataError
from rtseg.io.rtstruct.contours import encode_slice, mask_rings, simplify_polygons
from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.rtstruct.rasterize import fill_polygons
from rtseg.io.rtstruct.roi_names import load_roi_name_map, match_roi_names, roi_names_for
from rtseg.io.rtstruct import read_rtstruct, rtstruct_to_labels, write_rtstruct
from rtseg.io.rtstruct.write import format_ds
from rtseg.io.volume import Volume


def _small_series(tmp: Path, origin=(20.0, 30.0, -10.0), spacing=(1.5, 1.5, 2.0), shape=(40, 36, 8)) -> Volume:
    aff = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    aff[:3, 3] = origin
    write_dicom_series(Volume(np.zeros(shape, np.int16), aff), tmp / "ct")
    return read_dicom_series(tmp / "ct")


def _ds_strings(ds: pydicom.Dataset) -> list[str]:
    out = []
    for elem in ds.iterall():
        if elem.VR == "DS" and elem.value is not None:
            values = elem.value if elem.VM > 1 else [elem.value]
            out.extend(getattr(v, "original_string", str(v)) for v in values)
    return out


# ------------------------------------------------------------------------------------ DS --

def test_every_ds_value_fits_16_bytes_far_from_the_origin(tmp_path: Path) -> None:
    series = _small_series(tmp_path, origin=(-99999.87654, 54321.123456, -8765.4321), spacing=(0.9765625, 0.9765625, 2.5))
    labels = np.zeros(series.shape, np.uint8)
    labels[5:30, 4:20, 2:6] = 2
    labels[12:16, 8:12, 3:5] = 0
    out = write_rtstruct(labels, series, CLASSES, COLORS, tmp_path / "RS.dcm")
    assert_dciodvfy_clean(out)
    values = _ds_strings(pydicom.dcmread(out))
    assert len(values) > 100 and max(len(v) for v in values) <= 16
    for v in values:
        float(v)  # every one parses
    back, _ = rtstruct_to_labels(out, series, CLASSES)
    np.testing.assert_array_equal(back.array, labels)


def test_format_ds_refuses_instead_of_truncating() -> None:
    assert format_ds(np.array([-12345678.1234, 0.0004, 1e10])).split(b"\\") == [b"-12345678.123", b"0.000",
                                                                              b"10000000000.000"]
    with pytest.raises(DataError, match="out of range"):
        format_ds(np.array([1.0, 2e11]))
    with pytest.raises(DataError, match="out of range"):
        format_ds(np.array([np.nan]))


# ---------------------------------------------------------------------- references, ROIs --

def test_references_roi_numbers_and_contour_sizes(tmp_path: Path) -> None:
    series = _small_series(tmp_path)
    labels = np.zeros(series.shape, np.uint8)
    labels[10, 10, 1] = 5  # one voxel
    labels[20, 5:7, 2] = 5  # two voxels in a row
    labels[3, 3, 3] = labels[4, 4, 3] = 3  # diagonal neighbours: two 4-connected components
    rng = np.random.default_rng(3)
    labels[:, :, 5] = np.where(rng.random(series.shape[:2]) < 0.4, 2, 0)  # speckle with holes and islands
    out = write_rtstruct(labels, series, CLASSES, COLORS, tmp_path / "RS.dcm")
    assert_dciodvfy_clean(out)
    ds = pydicom.dcmread(out)
    ct = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.meta["dicom"]["files"]]
    # Frame of Reference and every referenced instance are the CT's own
    assert ds.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert {r.ReferencedFrameOfReferenceUID for r in ds.StructureSetROISequence} == {ct[0].FrameOfReferenceUID}
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    listed = [c.ReferencedSOPInstanceUID for c in ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
              .ContourImageSequence]
    assert listed == [c.SOPInstanceUID for c in ct]
    z_of = {c.SOPInstanceUID: float(c.ImagePositionPatient[2]) for c in ct}
    # ROI numbers: the label values, unique, and the three sequences agree
    numbers = [int(r.ROINumber) for r in ds.StructureSetROISequence]
    assert numbers == [2, 3, 5] and len(set(numbers)) == len(numbers)
    assert [int(r.ReferencedROINumber) for r in ds.ROIContourSequence] == numbers
    assert [int(o.ReferencedROINumber) for o in ds.RTROIObservationsSequence] == numbers
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == ["ORGAN"] * 3
    for rc in ds.ROIContourSequence:
        assert [int(c.ContourNumber) for c in rc.ContourSequence] == list(range(1, len(rc.ContourSequence) + 1))
        for c in rc.ContourSequence:
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            assert c.ContourGeometricType == "CLOSED_PLANAR" and int(c.NumberOfContourPoints) == len(pts) >= 3
            assert np.allclose(pts[:, 2], z_of[c.ContourImageSequence[0].ReferencedSOPInstanceUID], atol=1e-3)
    back, report = rtstruct_to_labels(out, series, CLASSES)
    np.testing.assert_array_equal(back.array, labels)
    # the same class keeps its number whatever else is present
    only = np.where(labels == 5, 5, 0).astype(np.uint8)
    again = pydicom.dcmread(write_rtstruct(only, series, CLASSES, COLORS, tmp_path / "RS5.dcm"))
    assert_dciodvfy_clean(tmp_path / "RS5.dcm")
    assert [int(r.ROINumber) for r in again.StructureSetROISequence] == [5]
    assert again.StructureSetROISequence[0].ROIName == "Femur_Head_R"


# --------------------------------------------------------------------------- orientation --

ORIENTATIONS = {  # patient position -> rotation of the patient in the scanner (LPS)
    "HFS": np.eye(3),
    "FFS": np.diag([-1.0, 1.0, -1.0]),
    "HFP": np.diag([-1.0, -1.0, 1.0]),
    "FFP": np.diag([1.0, -1.0, -1.0]),
}


def _reposition(src: Path, dst: Path, rot: np.ndarray, position: str) -> Path:
    """The shared series as if the patient lay ``position``: orientation and positions rotated, pixels untouched."""
    dst.mkdir(parents=True)
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in np.concatenate([rot @ iop[:3], rot @ iop[3:]])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in rot @ np.asarray(ds.ImagePositionPatient, float)]
        ds.PatientPosition = position
        ds.save_as(dst / f.name)
    return dst


@pytest.fixture(scope="module")
def hfs_contours(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[np.ndarray]]:
    ct = read_dicom_series(need_series())
    labels = np.zeros(ct.shape, np.uint8)
    labels[:, :, 8:12] = (ct.array[:, :, 8:12] > 200) * 2  # bone and contrast: real anatomy, holes included
    out = write_rtstruct(labels, ct, CLASSES, COLORS, tmp_path_factory.mktemp("hfs") / "RS.dcm")
    assert_dciodvfy_clean(out)
    return labels, [c.points for c in read_rtstruct(out).rois[0].contours]


@pytest.mark.parametrize("position", ["FFS", "HFP", "FFP", "HFS"])
def test_contours_land_on_the_same_anatomy_for_any_patient_position(
    position: str, hfs_contours: tuple[np.ndarray, list[np.ndarray]], tmp_path: Path
) -> None:
    rot = ORIENTATIONS[position]
    folder = _reposition(need_series(), tmp_path / position, rot, position)
    ct = read_dicom_series(folder)
    labels = np.zeros(ct.shape, np.uint8)
    labels[:, :, 8:12] = (ct.array[:, :, 8:12] > 200) * 2
    np.testing.assert_array_equal(labels, hfs_contours[0])  # the same voxels: rotation keeps the slice order
    out = write_rtstruct(labels, ct, CLASSES, COLORS, tmp_path / "RS.dcm")
    assert_dciodvfy_clean(out)
    contours = [c.points for c in read_rtstruct(out).rois[0].contours]
    # in patient coordinates the contours moved exactly as the patient did
    assert len(contours) == len(hfs_contours[1])
    for ours, hfs in zip(contours, hfs_contours[1]):
        np.testing.assert_allclose(ours, hfs @ rot.T, atol=2e-3)
    # and they enclose the bone voxels where SimpleITK (GDCM) puts them
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    hu = sitk.GetArrayFromImage(img)  # (slice, row, column)
    to_index = np.linalg.inv(np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing()))
    by_slice: dict[int, list[np.ndarray]] = {}
    for pts in contours:
        idx = (pts - np.asarray(img.GetOrigin())) @ to_index.T  # continuous (column, row, slice)
        by_slice.setdefault(int(round(idx[0, 2])), []).append(idx[:, :2])
    assert sorted(by_slice) == [8, 9, 10, 11]
    for k, polys in by_slice.items():
        expected = hu[k].T > 200
        np.testing.assert_array_equal(fill_independent(polys, expected.shape, "xor"), expected)


# ------------------------------------------------------------------------------ holes --

@pytest.fixture(scope="module")
def both_encodings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Volume, np.ndarray, dict[str, Path]]:
    ct = read_dicom_series(need_series())
    labels = organ_labels(ct.shape)
    tmp = tmp_path_factory.mktemp("holes")
    files = {h: write_rtstruct(labels, ct, CLASSES, COLORS, tmp / f"RS_{h}.dcm", holes=h) for h in ("keyhole", "xor")}
    return ct, labels, files


@pytest.mark.parametrize("holes", ["keyhole", "xor"])
def test_hole_encodings_valid_and_read_back_exactly(holes: str, both_encodings) -> None:
    ct, labels, files = both_encodings
    assert_dciodvfy_clean(files[holes])
    back, report = rtstruct_to_labels(files[holes], ct, CLASSES)
    assert report.skipped_contours == 0
    np.testing.assert_array_equal(back.array, labels)


def test_keyhole_means_the_same_to_xor_and_union_readers(both_encodings) -> None:
    """An independent reader (matplotlib) that XORs and one that unites nested contours agree on keyhole files
    and disagree on XOR files: the reason keyhole is the default."""
    ct, labels, files = both_encodings
    inv = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine)
    for holes, path in files.items():
        roi = read_rtstruct(path).roi("Rectum")
        by_slice: dict[int, list[np.ndarray]] = {}
        for c in roi.contours:
            vox = c.points @ inv[:3, :3].T + inv[:3, 3]
            by_slice.setdefault(int(round(vox[0, 2])), []).append(vox[:, :2])
        if holes == "keyhole":
            assert max(len(v) for v in by_slice.values()) == 2  # outer ring with the hole cut in, and the island
        for k, polys in by_slice.items():
            truth = labels[:, :, k] == 3
            xor, union = (fill_independent(polys, truth.shape, rule) for rule in ("xor", "union"))
            np.testing.assert_array_equal(xor, truth)
            if holes == "keyhole":
                np.testing.assert_array_equal(union, truth)
            else:
                assert union.sum() > truth.sum()  # a union reader fills the hole


def test_reader_takes_contours_through_voxel_centres_and_cuts_through_them() -> None:
    """Other writers draw outlines through the centres of the edge voxels and keyhole cuts along voxel rows."""
    truth = np.zeros((12, 12), bool)
    truth[2:10, 2:10] = True
    truth[4:7, 4:7] = False
    outer = [(2, 2), (9, 2), (9, 9), (2, 9)]  # through the centres of the edge voxels
    hole = [(3, 3), (3, 7), (7, 7), (7, 3)]  # around the hole, through the centres of its foreground rim
    # keyhole: along the outer edge, in at (2, 5) -> (3, 5) through foreground voxel centres, round the hole, out
    cut = np.array(outer + [(2, 5), (3, 5), (3, 3), (7, 3), (7, 7), (3, 7), (3, 5), (2, 5)], float)
    assert np.array_equal(fill_polygons([cut], truth.shape), truth)
    assert np.array_equal(fill_polygons([np.array(outer, float), np.array(hole, float)], truth.shape), truth)
    assert np.array_equal(fill_polygons([np.array([[5.0, 5.0]])], truth.shape), np.pad([[True]], ((5, 6), (5, 6))))


# --------------------------------------------------------------------- simplification --

def test_simplified_contours_are_the_same_within_the_tolerance() -> None:
    rng = np.random.default_rng(7)
    mask = ndimage.binary_opening(ndimage.gaussian_filter(rng.random((120, 90)), 3) > 0.5)
    raw = [p for p, _ in encode_slice(mask, "xor")]
    for tol in (0.05, 0.15):
        simple = simplify_polygons(raw, tol)
        assert sum(map(len, simple)) < 0.8 * sum(map(len, raw))
        for r, s in zip(raw, simple):
            assert {tuple(v) for v in s} <= {tuple(v) for v in r}  # kept vertices are original ones
            a, b = s, np.roll(s, -1, axis=0)  # every original vertex within tol of the new outline
            ab = b - a
            t = np.clip(((r[:, None] - a[None]) * ab[None]).sum(-1) / (ab ** 2).sum(-1)[None], 0, 1)
            d = np.linalg.norm(a[None] + t[..., None] * ab[None] - r[:, None], axis=-1).min(axis=1)
            assert d.max() <= tol + 1e-9
        assert np.array_equal(fill_polygons(simple, mask.shape), mask)
    assert len(mask_rings(mask)) == len(raw)


# ----------------------------------------------------------------------------- names --

def test_tg263_names_by_default_and_the_mapping_file(tmp_path: Path) -> None:
    organs = ["prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right", "brainstem", "spinal_cord",
              "parotid_left", "parotid_right", "esophagus", "larynx", "mandible", "kidney_left"]
    assert roi_names_for(organs) == ["Prostate", "Bladder", "Rectum", "Femur_Head_L", "Femur_Head_R", "Brainstem",
                                     "SpinalCord", "Parotid_L", "Parotid_R", "Esophagus", "Larynx", "Bone_Mandible",
                                     "kidney_left"]
    assert roi_names_for(["BrainStem", "Femoral Head L"]) == ["Brainstem", "Femur_Head_L"]
    f = tmp_path / "names.json"
    f.write_text(json.dumps({"bladder": "Blase", "rectum": "Rektum"}))
    assert roi_names_for(organs[:3], load_roi_name_map(f)) == ["Prostate", "Blase", "Rektum"]
    y = tmp_path / "names.yml"
    y.write_text("bladder: Blase\n")
    assert load_roi_name_map(y) == {"bladder": "Blase"}
    with pytest.raises(ConfigError, match="unknown classes"):
        roi_names_for(organs[:3], {"kidney": "Niere"})
    with pytest.raises(ConfigError, match="two ROIs the same"):
        roi_names_for(organs[:3], {"bladder": "Rectum"})
    with pytest.raises(ConfigError, match="1 to 64 characters"):
        roi_names_for(organs[:3], {"bladder": "x" * 65})
    series = _small_series(tmp_path)
    labels = np.zeros(series.shape, np.uint8)
    labels[2:5, 2:5, 2] = 1
    with pytest.raises(ConfigError, match="two ROIs the same"):  # names given as they are are checked too
        write_rtstruct(labels, series, CLASSES, COLORS, tmp_path / "RS.dcm", names=["A", "b", "c", "d", "a"])
    assert not (tmp_path / "RS.dcm").exists()
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping of class name"):
        load_roi_name_map(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("roi", "cls"),
    [("Femur_Head_L", "femoral_head_left"), ("Fem Head L", "femoral_head_left"), ("femur head lt", "femoral_head_left"),
     ("L Femoral Head", "femoral_head_left"), ("FemurHeadL", "femoral_head_left"), ("FEMUR_HEAD_R", "femoral_head_right"),
     ("Parotid_L", "parotid_left"), ("Lt Parotid", "parotid_left"), ("parotid left", "parotid_left"),
     ("Parotid Rt", "parotid_right"), ("BrainStem", "brainstem"), ("Brain_Stem", "brainstem"),
     ("Spinal Cord", "spinal_cord"), ("SpinalCord", "spinal_cord"), ("Bone_Mandible", "mandible"),
     ("Oesophagus", "esophagus"), ("bladder", "bladder"), ("Prostate", "prostate")],
)
def test_reader_aliases_match_tg263_and_clinic_variants(roi: str, cls: str) -> None:
    classes = ["background", "prostate", "bladder", "femoral_head_left", "femoral_head_right", "parotid_left",
               "parotid_right", "brainstem", "spinal_cord", "mandible", "esophagus"]
    assert match_roi_names([roi], classes) == {roi: cls}


def test_reader_aliases_keep_other_structures_out() -> None:
    classes = ["background", "femoral_head_left", "parotid_left", "bladder", "spinal_cord"]
    rois = ["Femur_Head_L_PRV", "Parotids", "Lt Lung", "Bladder_Wall", "SpinalCord+5mm", "z_Bladder", "CTV_Prostate"]
    assert match_roi_names(rois, classes) == {}


def test_cli_holes_and_roi_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    series = _small_series(tmp_path)
    labels = np.zeros(series.shape, np.uint8)
    labels[5:30, 4:20, 2:6] = 2
    labels[12:16, 8:12, 3:5] = 0
    write_nifti(series.with_array(labels), tmp_path / "lab.nii.gz")
    (tmp_path / "names.json").write_text(json.dumps({"bladder": "Blase"}))
    for holes, n in (("xor", 2), ("keyhole", 1)):
        out = tmp_path / f"RS_{holes}.dcm"
        assert cli_main.main(["convert", "nifti-to-rtstruct", "--series", str(tmp_path / "ct"), "--labels",
                              str(tmp_path / "lab.nii.gz"), "--out", str(out), "--holes", holes,
                              "--roi-names", str(tmp_path / "names.json")]) == 0
        assert_dciodvfy_clean(out)
        rs = read_rtstruct(out)
        assert rs.roi_names == ["Blase"]
        assert max(sum(1 for c in rs.rois[0].contours if abs(c.points[0, 2] - z) < 1e-3)
                   for z in {c.points[0, 2] for c in rs.rois[0].contours}) == n
        back, _ = rtstruct_to_labels(out, series, CLASSES, aliases={"bladder": ["Blase"]})
        np.testing.assert_array_equal(back.array, read_nifti(tmp_path / "lab.nii.gz").array)
    assert cli_main.main(["convert", "nifti-to-rtstruct", "--series", str(tmp_path / "ct"), "--labels",
                          str(tmp_path / "lab.nii.gz"), "--out", str(tmp_path / "x.dcm"), "--roi-names",
                          str(tmp_path / "missing.json")]) == 2
    assert "missing.json: ROI name mapping file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.dcm").exists()
