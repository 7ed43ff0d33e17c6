"""``rtseg predict``: geometry of outputs, orientation handling, resampling, air skipping, batch mode, DICOM,
post-processing; sliding window checked against MONAI."""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel.orientations as nio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from rtseg.cli import main as cli_main
from rtseg.data.preprocess import GridInfo, to_network_grid
from rtseg.errors import DataError
from rtseg.inference.pipeline import PredictOptions, find_cases, predict_path
from rtseg.inference.postprocess import fill_holes, keep_largest_component, postprocess
from rtseg.inference.predictor import Predictor, body_box, fold_batchnorm, load_model
from rtseg.inference.sliding_window import plan_windows, sliding_window_predict
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.volume import Volume, affine_from_spacing

from predict_helpers import ORIENTATIONS, ckpt, ckpt_coarse, make_checkpoint, phantom, reoriented  # noqa: F401 (fixtures)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(autouse=True)
def only_our_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "rtseg.cli.predict" in cli_main.COMMAND_MODULES
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("rtseg.cli.predict",))


# ----------------------------------------------------------------------------- sliding window


def test_sliding_window_matches_monai() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 5, padding=2)
    img = torch.randn(1, 1, 40, 33, 20)
    with torch.no_grad():
        ours = sliding_window_predict(conv, img, (16, 16, 16), 3, overlap=0.5, batch_size=3)
        ref = sliding_window_inference(img, (16, 16, 16), 3, conv, overlap=0.5, mode="gaussian")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_skipped_windows_are_background_and_others_unchanged() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 3, 3, padding=1)
    img = torch.randn(1, 1, 48, 16, 16)
    skip = np.zeros((48, 16, 16), bool)
    skip[24:] = True  # windows starting at 24, 32 lie entirely in it
    assert len(plan_windows((48, 16, 16), (16, 16, 16), 0.5, skip)) == 3
    with torch.no_grad():
        full = sliding_window_predict(conv, img, (16, 16, 16), 3, overlap=0.5)
        part = sliding_window_predict(conv, img, (16, 16, 16), 3, overlap=0.5, skip_mask=skip)
    assert (part[0, :, 32:].argmax(0) == 0).all()  # covered by no run window
    torch.testing.assert_close(part[:, :, :16], full[:, :, :16])  # no skipped window reaches here


def test_fold_batchnorm_is_exact(ckpt: Path) -> None:
    model = load_model(ckpt).model
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules()) < sum(
        isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- predictor


def test_prediction_is_not_trivial_and_air_is_background(ckpt: Path) -> None:
    vol = Volume(phantom(), affine_from_spacing((1.5, 1.5, 2.0)))
    pred = Predictor(load_model(ckpt), air_margin_mm=2.0).predict(vol)
    assert pred.shape == vol.shape and pred.array.dtype == np.uint8
    assert len(np.unique(pred.array)) >= 2  # the orientation tests below would be vacuous otherwise
    far_air = np.zeros(vol.shape, bool)
    far_air[:, :, :3] = True  # slices with no body voxel, beyond the 1-voxel box margin
    assert (pred.array[far_air] == 0).all()


def test_air_skipping_gives_the_full_volume_answer(ckpt: Path) -> None:
    """Outside the body box the answer is background; inside it equals a run over the whole volume."""
    vol = Volume(phantom(shape=(48, 44, 30)), affine_from_spacing((1.5, 1.5, 2.0)))
    loaded = load_model(ckpt)
    fast = Predictor(loaded, skip_air=True, air_margin_mm=6.0)
    slow = Predictor(loaded, skip_air=False)
    a, b = fast.predict_labels(vol), slow.predict_labels(vol)
    box = fast.stats.box
    assert fast.stats.windows_run < slow.stats.windows_run
    inside = np.zeros(vol.shape, bool)
    inside[box] = True
    assert (a[~inside] == 0).all()
    assert 0.1 < np.mean(b == 1) < 0.9
    # windows cut at the box edge see less air, so a few labels there may change; nothing else does
    assert np.mean(a == b) > 0.999


def test_body_box_covers_every_non_air_voxel() -> None:
    hu = np.full((30, 20, 10), -1000, np.int16)
    hu[5, 7, 3] = 0
    hu[20, 12, 6] = 100
    info = GridInfo(None, hu.shape, (15, 10, 5), (2.0, 2.0, 2.0))
    box = body_box(hu, info, roi=(4, 4, 2), margin_mm=0.0)
    assert box == (slice(2, 11), slice(3, 7), slice(1, 4))
    # on the network's stride grid (or the volume's end), so windows see the same downsampling phase
    hu = np.full((120, 100, 40), -1000, np.int16)
    hu[37:90, 21:60, 5:33] = 40
    info = GridInfo(None, hu.shape, (60, 50, 20), (2.0, 2.0, 2.0))
    box = body_box(hu, info, roi=(16, 16, 8), margin_mm=2.0, stride=8)
    assert [(s.start, s.stop) for s in box] == [(16, 48), (8, 32), (0, 20)]
    assert body_box(np.full((8, 8, 8), -1000), GridInfo(None, (8, 8, 8), (8, 8, 8), (1, 1, 1)), (4, 4, 4)) is None


def test_tta_mirrors_average_to_a_consistent_answer(ckpt: Path) -> None:
    vol = Volume(phantom(), affine_from_spacing((1.5, 1.5, 2.0)))
    loaded = load_model(ckpt)
    plain = Predictor(loaded).predict_labels(vol)
    tta = Predictor(loaded, tta=True).predict_labels(vol)
    assert tta.shape == vol.shape
    assert np.mean(tta == plain) > 0.97  # the mirrored passes see the same voxels, so they mostly agree


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_prediction_follows_the_voxels_in_any_orientation(ckpt: Path, name: str) -> None:
    """Canonicalization makes the network input identical, so the labels are the reoriented labels."""
    vol = Volume(phantom(), affine_from_spacing((1.5, 1.5, 2.0), (-30.0, 20.0, 5.0)))
    predictor = Predictor(load_model(ckpt))
    ref = predictor.predict_labels(vol)
    other = reoriented(vol, ORIENTATIONS[name])
    got = predictor.predict_labels(other)
    assert got.shape == other.shape
    np.testing.assert_array_equal(got, nio.apply_orientation(ref, ORIENTATIONS[name]))


def test_other_spacing_gives_labels_on_the_input_grid(ckpt_coarse: Path) -> None:
    """Against an independent path: MONAI on the whole network grid, trilinear logits, argmax."""
    vol = Volume(phantom(shape=(44, 40, 20)), affine_from_spacing((1.2, 1.3, 3.0)))
    loaded = load_model(ckpt_coarse)
    labels = Predictor(loaded, fold_bn=False).predict_labels(vol)
    assert labels.shape == vol.shape
    image, info = to_network_grid(vol, loaded.bundle.preprocessing)
    assert info.network_shape != vol.shape
    with torch.no_grad():
        logits = sliding_window_inference(torch.from_numpy(image)[None, None], loaded.bundle.patch_size, 2, loaded.model,
                                          overlap=0.5, mode="gaussian")
        up = F.interpolate(logits, size=vol.shape, mode="trilinear", align_corners=False)
    ref = up[0].argmax(0).numpy()
    assert np.mean(labels == ref) > 0.97

# ----------------------------------------------------------------------------- pipeline / CLI


@pytest.mark.parametrize("name", ["ras", *sorted(ORIENTATIONS)])
def test_output_nifti_has_input_shape_and_affine(ckpt_coarse: Path, tmp_path: Path, name: str) -> None:
    vol = Volume(phantom(shape=(36, 32, 20)), affine_from_spacing((1.5, 1.5, 2.5), (10.0, -20.0, 30.0)))
    if name != "ras":
        vol = reoriented(vol, ORIENTATIONS[name])
    write_nifti(vol, tmp_path / "in" / "p01_ct.nii.gz")
    rc = cli_main.main(["predict", "--checkpoint", str(ckpt_coarse), "--input", str(tmp_path / "in" / "p01_ct.nii.gz"),
                        "--output", str(tmp_path / "out"), "--format", "nifti", "png", "--device", "cpu"])
    assert rc == 0
    out = read_nifti(tmp_path / "out" / "p01_pred.nii.gz")
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-5)
    assert out.array.dtype == np.uint8
    assert (tmp_path / "out" / "p01_overlay.png").stat().st_size > 0


def test_batch_with_a_corrupt_file_reports_it_and_finishes_the_rest(ckpt_coarse: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "in"
    for i in range(2):
        write_nifti(Volume(phantom(shape=(24, 24, 12), seed=i), affine_from_spacing((2.0, 2.0, 2.5))),
                    src / f"case{i}.nii.gz")
    (src / "broken.nii.gz").write_bytes(b"this is not a NIfTI file")
    out = tmp_path / "out"
    rc = cli_main.main(["predict", "--checkpoint", str(ckpt_coarse), "--input", str(src), "--output", str(out),
                        "--largest-component", "--fill-holes"])
    assert rc == 1
    rows = {r["case"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert set(rows) == {"broken", "case0", "case1"}
    assert rows["broken"]["status"] == "failed" and "broken.nii.gz" in rows["broken"]["error"]
    assert rows["case0"]["status"] == rows["case1"]["status"] == "ok"
    assert float(rows["case0"]["seconds"]) > 0
    assert sorted(p.name for p in out.glob("*_pred.nii.gz")) == ["case0_pred.nii.gz", "case1_pred.nii.gz"]
    from scipy import ndimage

    pred = read_nifti(out / "case0_pred.nii.gz").array
    for c in np.unique(pred)[1:]:  # --largest-component: one blob per organ
        assert ndimage.label(pred == c, structure=np.ones((3, 3, 3)))[1] == 1
    err = capsys.readouterr().err
    assert "broken" in err and "Traceback" not in err


def test_find_cases_names_and_kinds(tmp_path: Path) -> None:
    (tmp_path / "a_ct.nii.gz").write_bytes(b"")
    (tmp_path / "b_0000.nii").write_bytes(b"")
    (tmp_path / "series1").mkdir()
    (tmp_path / "series1" / "x.dcm").write_bytes(b"")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "README.txt").write_text("a stray file beside the cases")
    (tmp_path / "curation").mkdir()  # a converted dataset's review pages: no DICOM file, not a series
    (tmp_path / "curation" / "index.html").write_text("<html></html>")
    (tmp_path / "noext").mkdir()  # files without extension count when they carry the DICM marker
    (tmp_path / "noext" / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    cases = find_cases(tmp_path, exclude=tmp_path / "out")
    assert [(c.name, c.kind) for c in cases] == [("a", "nifti"), ("b", "nifti"), ("noext", "dicom"),
                                                  ("series1", "dicom")]
    assert [(c.name, c.kind) for c in find_cases(tmp_path / "series1")] == [("series1", "dicom")]


def test_user_errors_are_one_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    rc = cli_main.main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no NIfTI files or DICOM series" in err and len(err.strip().splitlines()) == 1
    write_nifti(Volume(phantom(shape=(16, 16, 16)), affine_from_spacing((1, 1, 1))), tmp_path / "c.nii.gz")
    rc = cli_main.main(["predict", "--checkpoint", str(tmp_path / "missing.pt"), "--input", str(tmp_path / "c.nii.gz"),
                        "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "missing.pt" in err and len(err.strip().splitlines()) == 1
    rc = cli_main.main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "c.nii.gz"),
                        "--output", str(tmp_path / "o"), "--overlap", "1.5"])
    assert rc == 2 and "--overlap" in capsys.readouterr().err
    if not torch.cuda.is_available():
        rc = cli_main.main(["predict", "--checkpoint", str(ckpt), "--input", str(tmp_path / "c.nii.gz"),
                            "--output", str(tmp_path / "o"), "--device", "cuda"])
        assert rc == 2 and "no CUDA GPU" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*.nii.gz")) if (tmp_path / "o").exists() else True


def _dicom(name: str) -> Path:
    p = DATA / name
    if not p.is_dir():
        pytest.skip(f"{p} not found (../shared/data is absent)")
    return p


def test_dicom_series_gives_nifti_on_the_series_grid_and_rtstruct(ckpt: Path, tmp_path: Path) -> None:
    series_dir = _dicom("dicom-ct-series")
    from rtseg.io.dicom.series import read_dicom_series

    coarse = make_checkpoint(tmp_path / "c4.pt", target_spacing=(4.0, 4.0, 4.0), patch=(32, 32, 16))
    report = predict_path(coarse, series_dir, tmp_path / "out", PredictOptions(("nifti", "rtstruct", "png"), "cpu"))
    assert not report.failed, report.results
    series = read_dicom_series(series_dir)
    pred = read_nifti(tmp_path / "out" / "dicom-ct-series_pred.nii.gz")
    assert pred.shape == series.shape
    np.testing.assert_allclose(pred.affine, series.affine, atol=1e-4)
    rt_path = tmp_path / "out" / "dicom-ct-series_rtstruct.dcm"
    assert rt_path.is_file()
    from dicom_checks import assert_dciodvfy_clean

    assert_dciodvfy_clean(rt_path)
    import pydicom

    ds = pydicom.dcmread(rt_path)
    assert ds.Modality == "RTSTRUCT"
    ref_series = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == series.meta["dicom"]["series_instance_uid"]
    present = {int(v) for v in np.unique(pred.array) if v > 0}
    assert {int(r.ROINumber) for r in ds.StructureSetROISequence} == present


def test_stripped_dicom_series_fails_cleanly_without_partial_outputs(ckpt: Path, tmp_path: Path) -> None:
    series_dir = _dicom("dicom-ct-series-stripped")
    coarse = make_checkpoint(tmp_path / "c4.pt", target_spacing=(4.0, 4.0, 4.0), patch=(32, 32, 16))
    # the only case failed on bad input: a user error (exit 2 in the CLI), and nothing is left behind
    with pytest.raises(DataError, match="UID"):
        predict_path(coarse, series_dir, tmp_path / "out", PredictOptions(("nifti", "rtstruct"), "cpu"))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- post-processing


def test_largest_component_keeps_the_biggest_blob() -> None:
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:8, 2:8, 2:8] = 1  # 216 voxels
    lab[12:15, 12:15, 12:15] = 1  # 27 voxels, separate
    lab[10:12, 2:4, 2:4] = 2  # another organ, one blob
    out = keep_largest_component(lab)
    assert (out[2:8, 2:8, 2:8] == 1).all()
    assert (out[12:15, 12:15, 12:15] == 0).all()
    assert (out == 2).sum() == 8
    assert (lab[12:15, 12:15, 12:15] == 1).all()  # input untouched


def test_fill_holes_fills_an_enclosed_cavity_only() -> None:
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[4:16, 4:16, 4:16] = 1
    lab[7:13, 7:13, 7:13] = 0  # enclosed cavity
    lab[9:11, 9:11, 9:11] = 2  # another organ inside stays
    lab[4:16, 2:5, 2:5] = 0
    cup = np.zeros_like(lab)
    cup[2:8, 16:20, 14:20] = 3
    cup[3:7, 17:20, 15:19] = 0  # open towards the volume edge: not a hole
    lab = np.maximum(lab, cup)
    out = fill_holes(lab)
    assert (out[7:13, 7:13, 7:13][lab[7:13, 7:13, 7:13] == 0] == 1).all()
    assert (out[9:11, 9:11, 9:11] == 2).all()
    np.testing.assert_array_equal(out[2:8, 16:20, 14:20], cup[2:8, 16:20, 14:20])
    np.testing.assert_array_equal(postprocess(lab), lab)
