"""What other programs make of rtseg's files, and what rtseg makes of theirs: plastimatch, rt-utils, highdicom.

All on the shared JPEG 2000 series. plastimatch cannot decode it, so it gets a decompressed copy (same UIDs)
and the CT geometry with --fixed (else it rasterises on a grid of its own)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_checks import assert_dciodvfy_clean
from interop_data import CLASSES, COLORS, ROI_OF, decompressed_copy, dice, need_series, organ_labels
from rtseg.cli import main as cli_main
from rtseg.errors import DataError
from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.rtstruct import rtstruct_to_labels, write_rtstruct
from rtseg.io.dicom.seg import seg_to_labels, write_seg
from rtseg.io.volume import Volume


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        assert os.environ.get("CI") != "true", f"{name} must be installed in CI"
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    src = need_series()
    tmp = tmp_path_factory.mktemp("interop")
    ct = read_dicom_series(src)
    labels = organ_labels(ct.shape)
    plain = decompressed_copy(src, tmp / "ct_plain")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(plain)))
    img = reader.Execute()
    sitk.WriteImage(img, str(tmp / "ct.nrrd"))
    files = {h: write_rtstruct(labels, ct, CLASSES, COLORS, tmp / f"RS_{h}.dcm", holes=h) for h in ("keyhole", "xor")}
    for f in files.values():
        assert_dciodvfy_clean(f)
    return {"tmp": tmp, "src": src, "ct": ct, "labels": labels, "plain": plain, "img": img, "files": files}


def _sitk_mask(path: Path, like: sitk.Image) -> np.ndarray:
    """A mask image as an rtseg-ordered (column, row, slice) array, after checking it is on the CT grid."""
    m = sitk.ReadImage(str(path))
    assert m.GetSize() == like.GetSize()
    np.testing.assert_allclose(m.GetOrigin(), like.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(m.GetDirection(), like.GetDirection(), atol=1e-6)
    return sitk.GetArrayFromImage(m).transpose(2, 1, 0) > 0


# ---------------------------------------------------------------------------- plastimatch --

@pytest.mark.parametrize("holes", ["keyhole", "xor"])
def test_plastimatch_reads_rtseg(holes: str, setup: dict) -> None:
    tool = _tool("plastimatch")
    out = setup["tmp"] / f"pl_read_{holes}"
    subprocess.run([tool, "convert", "--input", str(setup["files"][holes]), "--referenced-ct", str(setup["plain"]),
                    "--fixed", str(setup["tmp"] / "ct.nrrd"), "--output-prefix", str(out), "--prefix-format", "nrrd"],
                   check=True, capture_output=True, timeout=300)
    scores = {}
    for label, name in ROI_OF.items():
        mask = _sitk_mask(out / f"{name}.nrrd", setup["img"])
        scores[name] = dice(mask, setup["labels"] == label)
    print(f"plastimatch reads rtseg ({holes}):", {k: round(v, 4) for k, v in scores.items()})
    assert scores["Bladder"] == 1.0 and scores["Femur_Head_R"] == 1.0  # no holes: the same either way
    if holes == "keyhole":
        assert scores["Rectum"] == 1.0  # holes and the island in one come back
    else:
        assert scores["Rectum"] < 1.0  # plastimatch fills nested contours: why keyhole is the default


def test_rtseg_reads_plastimatch(setup: dict) -> None:
    tool = _tool("plastimatch")
    masks = setup["tmp"] / "masks"
    masks.mkdir()
    for label, name in ROI_OF.items():
        m = sitk.GetImageFromArray((setup["labels"] == label).astype(np.uint8).transpose(2, 1, 0))
        m.CopyInformation(setup["img"])
        sitk.WriteImage(m, str(masks / f"{name}.nrrd"))
    out = setup["tmp"] / "pl_written"
    subprocess.run([tool, "convert", "--input-prefix", str(masks), "--referenced-ct", str(setup["plain"]),
                    "--output-dicom", str(out)], check=True, capture_output=True, timeout=300)
    rs = [p for p in out.rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT"]
    assert len(rs) == 1
    back, report = rtstruct_to_labels(rs[0], setup["ct"], CLASSES)
    assert sorted(report.mapped) == sorted(ROI_OF.values()) and report.skipped_contours == 0
    np.testing.assert_array_equal(back.array, setup["labels"])


# ------------------------------------------------------------------------------- rt-utils --

def test_rtseg_reads_rt_utils(setup: dict) -> None:
    from rt_utils import RTStructBuilder

    rt = RTStructBuilder.create_new(dicom_series_path=str(setup["src"]))
    # rt-utils' masks are (row, column, slice) in its own slice order: check that order is rtseg's
    z = [float(d.ImagePositionPatient[2]) for d in rt.series_data]
    assert np.allclose(np.diff(z), setup["ct"].affine[2, 2]) and np.isclose(z[0], setup["ct"].affine[2, 3])
    for label, name in ROI_OF.items():
        rt.add_roi(mask=(setup["labels"] == label).transpose(1, 0, 2), color=list(COLORS[label - 1]), name=name)
    path = setup["tmp"] / "rt_utils.dcm"
    rt.save(str(path))
    back, report = rtstruct_to_labels(path, setup["ct"], CLASSES)
    assert sorted(report.mapped) == sorted(ROI_OF.values())
    np.testing.assert_array_equal(back.array, setup["labels"])


def test_rt_utils_reads_rtseg(setup: dict) -> None:
    from rt_utils import RTStructBuilder

    masks = {}
    for holes, path in setup["files"].items():
        rt = RTStructBuilder.create_from(dicom_series_path=str(setup["src"]), rt_struct_path=str(path))
        masks[holes] = {n: rt.get_roi_mask_by_name(n).transpose(1, 0, 2) for n in ROI_OF.values()}
    for label, name in ROI_OF.items():
        truth = setup["labels"] == label
        # rt-utils rounds vertices to voxel centres and fills with OpenCV: about half a voxel grows on some sides
        assert dice(masks["keyhole"][name], truth) > 0.95
        np.testing.assert_array_equal(masks["keyhole"][name], masks["xor"][name])
    assert not masks["keyhole"]["Rectum"][150, 350 - 12, 10]  # inside the hole


# ---------------------------------------------------------------------------- DICOM SEG --

def test_seg_is_valid_and_highdicom_reads_rtseg_masks(setup: dict) -> None:
    import highdicom as hd

    path = write_seg(setup["labels"], setup["ct"], CLASSES, COLORS, setup["tmp"] / "seg.dcm")
    assert_dciodvfy_clean(path)
    seg = hd.seg.segread(path)
    assert seg.FrameOfReferenceUID == setup["ct"].meta["dicom"]["frame_of_reference_uid"]
    assert list(seg.get_segment_numbers()) == [1, 2, 3, 4, 5]
    desc = {n: seg.get_segment_description(n) for n in seg.get_segment_numbers()}
    assert [d.SegmentLabel for d in desc.values()] == ["Prostate", "Bladder", "Rectum", "Femur_Head_L", "Femur_Head_R"]
    assert desc[2].SegmentedPropertyTypeCodeSequence[0].CodeValue == "89837001"  # SNOMED CT: urinary bladder
    assert desc[5].SegmentedPropertyTypeCodeSequence[0].CodeValue == "2812003"  # head of femur ...
    assert "24028007" in {c.CodeValue for c in desc[5].PrimaryAnatomicStructureSequence}  # ... right
    assert desc[2].SegmentAlgorithmType == "AUTOMATIC"
    sops = setup["ct"].meta["dicom"]["sop_instance_uids"]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=sops, segment_numbers=[2, 3, 5],
                                               assert_missing_frames_are_empty=True)
    for col, label in enumerate([2, 3, 5]):
        np.testing.assert_array_equal(pixels[..., col].transpose(2, 1, 0) > 0, setup["labels"] == label)
    back, report = seg_to_labels(path, setup["ct"], CLASSES)
    assert report.empty_classes == ["prostate", "femoral_head_left"]
    np.testing.assert_array_equal(back.array, setup["labels"])


def test_seg_cli_round_trip_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    aff = np.diag([-1.5, -1.5, 2.0, 1.0])
    write_dicom_series(Volume(np.zeros((32, 28, 6), np.int16), aff), tmp_path / "ct")
    series = read_dicom_series(tmp_path / "ct")
    labels = np.zeros(series.shape, np.uint8)
    labels[4:20, 5:15, 1:5] = 2
    labels[22:28, 10:20, 2:4] = 4
    write_nifti(series.with_array(labels), tmp_path / "lab.nii.gz")
    seg = tmp_path / "seg.dcm"
    assert cli_main.main(["convert", "nifti-to-seg", "--series", str(tmp_path / "ct"), "--labels",
                          str(tmp_path / "lab.nii.gz"), "--out", str(seg)]) == 0
    assert_dciodvfy_clean(seg)
    assert cli_main.main(["convert", "seg-to-nifti", "--series", str(tmp_path / "ct"), "--seg", str(seg),
                          "--out", str(tmp_path / "back.nii.gz")]) == 0
    np.testing.assert_array_equal(read_nifti(tmp_path / "back.nii.gz").array, labels)
    write_dicom_series(Volume(np.zeros(series.shape, np.int16), series.affine), tmp_path / "other")
    with pytest.raises(DataError, match="another scan"):
        seg_to_labels(seg, read_dicom_series(tmp_path / "other"), CLASSES)
    assert cli_main.main(["convert", "seg-to-nifti", "--series", str(tmp_path / "ct"), "--seg",
                          str(tmp_path / "lab.nii.gz"), "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "not a readable DICOM Segmentation" in capsys.readouterr().err
    assert not (tmp_path / "x.nii.gz").exists()


def test_rtseg_reads_a_fractional_seg_written_by_highdicom(tmp_path: Path) -> None:
    """Another tool's SEG: FRACTIONAL probabilities, its own segment labels, only some slices referenced."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    write_dicom_series(Volume(np.zeros((30, 26, 6), np.int16), np.diag([-1.2, -1.2, 2.5, 1.0])), tmp_path / "ct")
    series = read_dicom_series(tmp_path / "ct")
    sources = [pydicom.dcmread(f) for f in series.meta["dicom"]["files"]]
    prob = np.zeros((6, 26, 30), np.float32)  # (slice, row, column)
    prob[1:4, 5:15, 8:20] = 0.9
    prob[2, 8:10, 10:14] = 0.3  # below one half: not in the organ
    algo = hd.AlgorithmIdentificationSequence(name="other", family=codes.cid7162.ArtificialIntelligence, version="1")
    desc = hd.seg.SegmentDescription(1, "urinary_bladder", codes.SCT.AnatomicalStructure, codes.SCT.Bladder,
                                     hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algo)
    seg = hd.seg.Segmentation(sources, prob[..., None], hd.seg.SegmentationTypeValues.FRACTIONAL, [desc], hd.UID(), 5,
                              hd.UID(), 1, "other", "other", "1", "0")
    seg.save_as(tmp_path / "seg.dcm")
    back, report = seg_to_labels(tmp_path / "seg.dcm", series, CLASSES)
    assert report.mapped == {"urinary_bladder": "bladder"}
    np.testing.assert_array_equal(back.array, (prob >= 0.5).transpose(2, 1, 0) * 2)
