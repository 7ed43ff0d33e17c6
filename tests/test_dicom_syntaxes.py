"""Every transfer syntax of a CT archive, and Enhanced CT, read voxel for voxel equal to the uncompressed series;
RTSTRUCT and SEG written on an Enhanced CT reference its frames (dciodvfy, highdicom); a syntax nobody decodes
is one line naming it."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_checks import assert_dciodvfy_clean
from dicom_syntaxes import ENHANCED, LOSSLESS, LOSSY, SyntaxSet
from rtseg.cli.main import main
from rtseg.errors import DataError
from rtseg.io.dicom.seg import seg_to_labels, write_seg
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.rtstruct import rtstruct_to_labels, write_rtstruct

NAMES = ["background", "Liver", "Heart"]
COLORS = [(255, 0, 0), (0, 255, 0)]


def _same_geometry(a, b) -> None:
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
    assert a.shape == b.shape


@pytest.mark.parametrize("variant", LOSSLESS, ids=lambda v: v.name)
def test_lossless_syntax_reads_voxel_for_voxel_equal(syntax_set: SyntaxSet, variant) -> None:
    folder = syntax_set.folder(variant.name)
    assert {str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            for f in folder.glob("*.dcm")} == {variant.syntax}
    ref, got = read_dicom_series(syntax_set.uncompressed), read_dicom_series(folder)
    _same_geometry(got, ref)
    assert got.array.dtype == ref.array.dtype and len(np.unique(ref.array)) > 100
    np.testing.assert_array_equal(got.array, ref.array)


@pytest.mark.parametrize("variant", LOSSY, ids=lambda v: v.name)
def test_lossy_syntax_decodes_within_its_loss(syntax_set: SyntaxSet, variant) -> None:
    ref, got = read_dicom_series(syntax_set.uncompressed), read_dicom_series(syntax_set.folder(variant.name))
    _same_geometry(got, ref)
    diff = np.abs(got.array.astype(np.int32) - ref.array.astype(np.int32))
    if variant.syntax.endswith(".81"):
        assert diff.max() <= 2  # JPEG-LS near-lossless NEAR=2: no pixel off by more than 2
    else:
        assert 0 < diff.mean() < 20  # JPEG 2000 at 10:1: lossy, yet the same image


@pytest.mark.parametrize("name", ENHANCED)
def test_enhanced_ct_reads_equal_to_its_slices(syntax_set: SyntaxSet, name: str) -> None:
    ref, got = read_dicom_series(syntax_set.uncompressed), read_dicom_series(syntax_set.folder(name))
    _same_geometry(got, ref)
    np.testing.assert_array_equal(got.array, ref.array)
    dicom = got.meta["dicom"]
    assert len(set(dicom["sop_instance_uids"])) == 1 and sorted(dicom["frame_numbers"]) == list(range(1, 9))


def _normal(ds: pydicom.Dataset) -> np.ndarray:
    item = ds.PerFrameFunctionalGroupsSequence[0]
    group = item if "PlaneOrientationSequence" in item else ds.SharedFunctionalGroupsSequence[0]
    orient = np.array(group.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    return np.cross(orient[:3], orient[3:])


def _frame_z(ds: pydicom.Dataset) -> dict[int, float]:
    """Frame number -> position along the normal, read from the file's functional groups (not by rtseg)."""
    normal = _normal(ds)
    return {n: float(np.dot(np.array(item.PlanePositionSequence[0].ImagePositionPatient, float), normal))
            for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1)}


def _labels(shape: tuple[int, ...]) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[150:330, 200:360, 1:6] = 1
    lab[230:290, 120:200, 2:8] = 2
    return lab


@pytest.mark.parametrize("name", ENHANCED)
def test_rtstruct_and_seg_on_enhanced_ct_reference_its_frames(syntax_set: SyntaxSet, name: str, tmp_path: Path) -> None:
    ct = read_dicom_series(syntax_set.folder(name))
    source = pydicom.dcmread(next(syntax_set.folder(name).glob("*.dcm")), stop_before_pixels=True)
    assert str(source.SOPClassUID) in ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
    lab = _labels(ct.shape)
    rs_path = write_rtstruct(lab, ct, NAMES, COLORS, tmp_path / "rs.dcm")
    seg_path = write_seg(lab, ct, NAMES, COLORS, tmp_path / "seg.dcm")
    assert_dciodvfy_clean(rs_path)
    assert_dciodvfy_clean(seg_path)
    np.testing.assert_array_equal(rtstruct_to_labels(rs_path, ct, NAMES)[0].array, lab)
    np.testing.assert_array_equal(seg_to_labels(seg_path, ct, NAMES)[0].array, lab)

    # RTSTRUCT: every contour cites the multi-frame instance and the frame it lies on (positions from the file)
    rs, z_of, normal = pydicom.dcmread(rs_path), _frame_z(source), _normal(source)
    n_contours = 0
    for roi in rs.ROIContourSequence:
        for c in roi.ContourSequence:
            (img,) = c.ContourImageSequence
            assert img.ReferencedSOPInstanceUID == source.SOPInstanceUID
            assert img.ReferencedSOPClassUID == source.SOPClassUID
            z = float(np.dot(np.array(c.ContourData[:3], float), normal))
            assert abs(z_of[int(img.ReferencedFrameNumber)] - z) < 1e-3
            n_contours += 1
    assert n_contours >= 11
    series_refs = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series_refs.SeriesInstanceUID == source.SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in series_refs.ContourImageSequence] == [source.SOPInstanceUID]
    assert rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == source.FrameOfReferenceUID

    # SEG read by highdicom: frame n of the source holds our labels' slice at that frame's position
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {source.SOPInstanceUID}
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ct.affine
    k_of_z = {round(float(np.dot(lps[:3, 3] + k * lps[:3, 2], normal)), 3): k for k in range(ct.shape[2])}
    frames = sorted(z_of)
    px = seg.get_pixels_by_source_frame(source_sop_instance_uid=source.SOPInstanceUID, source_frame_numbers=frames,
                                        segment_numbers=[1, 2], assert_missing_frames_are_empty=True)
    for i, f in enumerate(frames):
        k = k_of_z[round(z_of[f], 3)]
        np.testing.assert_array_equal(px[i, :, :, 0], lab[:, :, k].T == 1)
        np.testing.assert_array_equal(px[i, :, :, 1], lab[:, :, k].T == 2)


def test_a_syntax_no_decoder_reads_is_named_in_one_line(syntax_set: SyntaxSet, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "mpeg2"
    folder.mkdir()
    for f in sorted(syntax_set.folder("jpeg-lossless-sv1").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no installed decoder
        ds.save_as(folder / f.name)
    with pytest.raises(DataError, match=r"MPEG2 Main Profile / Main Level \(1\.2\.840\.10008\.1\.2\.4\.100\) cannot be "
                                        r"decoded: no installed decoder reads it"):
        read_dicom_series(folder)
    rc = main(["convert", "dicom-to-nifti", "--series", str(folder), "--out", str(tmp_path / "ct.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "1.2.840.10008.1.2.4.100" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "ct.nii.gz").exists()


def test_a_damaged_jpeg_lossless_stream_is_one_error_naming_the_syntax(syntax_set: SyntaxSet, tmp_path: Path, caplog) -> None:
    folder = tmp_path / "cut"
    folder.mkdir()
    for k, f in enumerate(sorted(syntax_set.folder("jpeg-lossless-sv1").glob("*.dcm"))):
        ds = pydicom.dcmread(f)
        if k == 3:  # the compressed stream cut in half
            frag = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
            data = next(frag)
            ds.PixelData = pydicom.encaps.encapsulate([data[: len(data) // 2]])
        ds.save_as(folder / f.name)
    with caplog.at_level(logging.CRITICAL), pytest.raises(DataError, match=r"CT_003\.dcm: pixel data cannot be decoded"
                                                          r" \(\w+; transfer syntax JPEG Lossless"):
        read_dicom_series(folder)


def test_plastimatch_reads_the_rtstruct_written_on_an_enhanced_ct(syntax_set: SyntaxSet, tmp_path: Path) -> None:
    """plastimatch (GDCM/DCMTK based) as an independent reader where it reads the multi-frame CT."""
    import shutil

    if shutil.which("plastimatch") is None:
        pytest.skip("plastimatch not installed")
    ct = read_dicom_series(syntax_set.folder(ENHANCED[0]))
    lab = _labels(ct.shape)
    folder = tmp_path / "in"
    shutil.copytree(syntax_set.folder(ENHANCED[0]), folder)
    write_rtstruct(lab, ct, NAMES, COLORS, folder / "rs.dcm")
    res = subprocess.run(["plastimatch", "convert", "--input", str(folder / "rs.dcm"), "--referenced-ct", str(folder),
                          "--output-prefix", str(tmp_path / "out"), "--prefix-format", "nii.gz"],
                         capture_output=True, text=True, timeout=120)
    if res.returncode != 0 or not (tmp_path / "out" / "Liver.nii.gz").exists():
        pytest.skip(f"plastimatch does not read this multi-frame CT: {(res.stdout + res.stderr)[-300:]}")
    import nibabel as nib

    got = np.asarray(nib.load(tmp_path / "out" / "Liver.nii.gz").dataobj) > 0
    assert got.sum() > 0
