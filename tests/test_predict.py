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
from rtseg.data.normalization import Normalization
from rtseg.data.preprocess import GridInfo, Preprocessing, to_network_grid
from rtseg.inference.pipeline import find_cases, predict_path
from rtseg.inference.postprocess import fill_holes, keep_largest_component, postprocess
from rtseg.inference.bundle import InferenceBundle, save_bundle
from rtseg.inference.predictor import Predictor, body_box, fold_batchnorm, load_model
from rtseg.inference.sliding_window import plan_windows, sliding_window_predict
from rtseg.io.nifti import read_nifti, write_nifti
from rtseg.io.volume import Volume, affine_from_spacing
from rtseg.models.spec import build_model, model_spec

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
NAMES = ["background", "prostate", "bladder"]
COLORS = [(0, 255, 255), (204, 0, 102)]
WINDOW = Normalization("ct_window", (-1000.0, 1000.0))


def make_checkpoint(path: Path, target_spacing=None, patch=(16, 16, 16), seed: int = 1) -> Path:
    """An untrained network with a fixed seed whose 1x1x1 head is set by least squares on a phantom
    (no gradient training): it then labels air as background and the body as an organ, so the
    comparisons below compare structured label maps, not noise."""
    torch.manual_seed(seed)
    spec = model_spec("ResUnet_3D", 1, len(NAMES), 4, 0.0)
    model = build_model(spec).eval()
    # give BatchNorm non-trivial statistics so folding it is a real test
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm3d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    hu = phantom(shape=(40, 32, 32))
    target = np.where(hu < -500, 0, np.where(hu > 200, 2, 1)).ravel()
    with torch.no_grad():
        feats = model.features(torch.from_numpy(WINDOW(hu))[None, None])[0].reshape(4, -1).T.double().numpy()
        design = np.c_[feats, np.ones(len(feats))]
        w = np.linalg.lstsq(design, np.eye(len(NAMES))[target], rcond=None)[0]
        model.head.weight.copy_(torch.from_numpy(w[:-1].T).float()[:, :, None, None, None])
        model.head.bias.copy_(torch.from_numpy(w[-1]).float())
    bundle = InferenceBundle(spec, tuple(NAMES), tuple(COLORS), Preprocessing(WINDOW, target_spacing), patch)
    save_bundle(path, bundle, model.state_dict())
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "native.pt")


@pytest.fixture(scope="module")
def ckpt_coarse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained (so to speak) at 2 mm isotropic: inputs at other spacings are resampled."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "coarse.pt", target_spacing=(2.0, 2.0, 2.0))


@pytest.fixture(autouse=True)
def only_our_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "rtseg.cli.predict" in cli_main.COMMAND_MODULES
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("rtseg.cli.predict",))


def phantom(shape=(40, 36, 28), seed: int = 0) -> np.ndarray:
    """Air around an asymmetric body with two 'organs' (so orientation mistakes show)."""
    rng = np.random.default_rng(seed)
    arr = np.full(shape, -1000, np.int16) + rng.integers(-10, 10, shape).astype(np.int16)
    g = np.indices(shape).astype(np.float32)
    c = np.array(shape, np.float32) / 2
    body = ((g[0] - c[0]) / (shape[0] * 0.36)) ** 2 + ((g[1] - c[1]) / (shape[1] * 0.3)) ** 2 <= 1
    body[:, :, : shape[2] // 6] = False
    arr[body] = 30
    arr[(g[0] - 12) ** 2 + (g[1] - 15) ** 2 + (g[2] - 12) ** 2 <= 16] = 400
    arr[10:18, 20:26, 14:22] = -80
    return arr


def reoriented(vol: Volume, ornt: np.ndarray) -> Volume:
    """Same voxels in the same world positions, stored in another axis order/direction."""
    arr = np.ascontiguousarray(nio.apply_orientation(vol.array, ornt))
    return Volume(arr, vol.affine @ nio.inv_ornt_aff(ornt, vol.shape))


ORIENTATIONS = {
    "flip_x": np.array([[0, -1], [1, 1], [2, 1]]),
    "lps_like": np.array([[0, -1], [1, -1], [2, 1]]),
    "permuted": np.array([[2, 1], [0, 1], [1, 1]]),
    "permuted_flipped": np.array([[1, -1], [2, 1], [0, -1]]),
}


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


def test_probabilities_match_monai_softmax_on_the_input_grid(ckpt_coarse: Path) -> None:
    """Against an independent path: MONAI logits on the whole network grid, trilinear, softmax."""
    vol = Volume(phantom(shape=(44, 40, 20)), affine_from_spacing((1.2, 1.3, 3.0)))
    loaded = load_model(ckpt_coarse)
    labels, probs = Predictor(loaded, fold_bn=False, skip_air=False).predict_with_probabilities(vol)
    assert probs.shape == (len(NAMES), *vol.shape) and probs.dtype == np.float32
    image, _ = to_network_grid(vol, loaded.bundle.preprocessing)
    with torch.no_grad():
        logits = sliding_window_inference(torch.from_numpy(image)[None, None], loaded.bundle.patch_size, 2,
                                          loaded.model, overlap=0.5, mode="gaussian")
        ref = torch.softmax(F.interpolate(logits, size=vol.shape, mode="trilinear", align_corners=False)[0], 0)
    np.testing.assert_allclose(probs, ref.numpy(), atol=1e-4)
    np.testing.assert_array_equal(probs.argmax(0), labels)


@pytest.mark.parametrize("which", ["native", "resampled"])
@pytest.mark.parametrize("orientation", ["ras", "permuted_flipped"])
def test_probabilities_sum_to_one_and_their_argmax_is_the_labels(ckpt: Path, ckpt_coarse: Path, which: str,
                                                                orientation: str) -> None:
    """Body box, resampling and reorientation all go through the one way back."""
    vol = Volume(phantom(), affine_from_spacing((1.5, 1.5, 2.0)))
    if orientation != "ras":
        vol = reoriented(vol, ORIENTATIONS[orientation])
    predictor = Predictor(load_model(ckpt if which == "native" else ckpt_coarse), air_margin_mm=2.0)
    labels, probs = predictor.predict_with_probabilities(vol)
    np.testing.assert_array_equal(labels, predictor.predict_labels(vol))
    assert probs.shape == (len(NAMES), *vol.shape) and len(np.unique(labels)) >= 2
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), labels)
    _, half = predictor.predict_with_probabilities(vol, dtype=np.float16)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32).sum(0), 1.0, atol=3e-3)
    top2 = np.sort(probs, axis=0)[-2:]
    clear = top2[1] - top2[0] > 2e-3  # where float16 rounding cannot swap the winner
    np.testing.assert_array_equal(half.argmax(0)[clear], labels[clear])


def test_air_only_volume_is_certain_background(ckpt: Path) -> None:
    vol = Volume(np.full((20, 20, 12), -1000, np.int16), affine_from_spacing((1.5, 1.5, 2.0)))
    labels, probs = Predictor(load_model(ckpt)).predict_with_probabilities(vol, dtype=np.float16)
    assert not labels.any() and probs.dtype == np.float16
    assert (probs[0] == 1).all() and not probs[1:].any()


def test_checkpoint_written_before_the_bundle_still_predicts(ckpt: Path, tmp_path: Path) -> None:
    """Format 1 (commit 3b0c831): training's inference_metadata + write_training_checkpoint, no bundle_version."""
    from rtseg.inference.bundle import load_bundle
    from rtseg.io.checkpoint import save_checkpoint

    bundle, weights, _ = load_bundle(ckpt)
    model = build_model(bundle.model_spec)
    model.load_state_dict(weights)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0)
    meta = {  # inference_metadata() of 3b0c831, key by key
        "model_spec": bundle.model_spec,
        "class_names": list(NAMES),
        "colors": [list(c) for c in COLORS],
        "preprocessing": Preprocessing(WINDOW, None).to_dict(),
        "patch_size": [16, 16, 16],
        "plan": None,
    }
    payload = {  # write_training_checkpoint() of 3b0c831
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": 40,
        "config": {"MODEL": {"NAME": "ResUnet_3D"}, "DATASET": {"N_CLASSES": len(NAMES)}},
        "best_metric": 0.5,
        "history": {"iteration": [40], "mean_dice": [0.5]},
        **meta,
    }
    old = save_checkpoint(payload, tmp_path / "old.pt")
    assert "bundle_version" not in torch.load(old, weights_only=True)
    loaded = load_model(old)
    assert loaded.bundle == InferenceBundle(bundle.model_spec, tuple(NAMES), tuple(COLORS), Preprocessing(WINDOW, None),
                                            (16, 16, 16), iteration=40)
    vol = Volume(phantom(), affine_from_spacing((1.5, 1.5, 2.0)))
    np.testing.assert_array_equal(Predictor(loaded).predict_labels(vol), Predictor(load_model(ckpt)).predict_labels(vol))


def test_restore_labels_box_equals_full() -> None:
    """A box whose border is background gives the labels of the whole logits."""
    info = GridInfo(None, (30, 26, 20), (15, 13, 10), (2.0, 2.0, 2.0))
    rng = np.random.default_rng(0)
    full = torch.zeros((3, 15, 13, 10))
    full[0] = 5.0
    box = (slice(3, 12), slice(2, 10), slice(1, 9))
    full[(slice(None),) + box] = torch.from_numpy(rng.normal(size=(3, 9, 8, 8)).astype(np.float32))
    full[0][box] -= 3.0  # background must not win everywhere in the box
    shell = torch.ones((15, 13, 10), dtype=torch.bool)
    shell[4:11, 3:9, 2:8] = False  # the box's outer voxel layer stays background, like the air margin
    full[0][shell], full[1][shell], full[2][shell] = 5.0, 0.0, 0.0
    a = info.restore_labels(full)
    b = info.restore_labels(full[(slice(None),) + box].clone(), box)
    assert len(np.unique(a)) == 3
    np.testing.assert_array_equal(a, b)


def test_restore_probabilities_is_the_softmax_and_fills_background_outside_the_box() -> None:
    info = GridInfo(None, (30, 26, 20), (15, 13, 10), (2.0, 2.0, 2.0))
    box = (slice(3, 12), slice(2, 10), slice(1, 9))
    part = torch.from_numpy(np.random.default_rng(1).normal(size=(3, 9, 8, 8)).astype(np.float32))
    full = torch.empty((3, 15, 13, 10))
    full[0], full[1:] = float(part.max()), float(part.min())  # the documented fill: background as sure as it gets
    full[(slice(None),) + box] = part
    up = F.interpolate(full[None].double(), size=info.canonical_shape, mode="trilinear", align_corners=False)[0].numpy()
    ref = np.exp(up - up.max(0))
    ref /= ref.sum(0)  # softmax by hand, in float64
    np.testing.assert_allclose(info.restore_probabilities(full), ref, atol=1e-6)
    np.testing.assert_allclose(info.restore_probabilities(part, box), ref, atol=1e-6)
    np.testing.assert_array_equal(info.restore_probabilities(part, box).argmax(0), info.restore_labels(part, box))
    with pytest.raises(ValueError, match="float32 or float16"):
        info.restore_probabilities(full, dtype=np.float64)


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
    cases = find_cases(tmp_path, exclude=tmp_path / "out")
    assert [(c.name, c.kind) for c in cases] == [("a", "nifti"), ("b", "nifti"), ("series1", "dicom")]
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
    from rtseg.io.dicom_series import read_dicom_series

    coarse = make_checkpoint(tmp_path / "c4.pt", target_spacing=(4.0, 4.0, 4.0), patch=(32, 32, 16))
    report = predict_path(coarse, series_dir, tmp_path / "out", formats=("nifti", "rtstruct", "png"), device="cpu")
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
    report = predict_path(coarse, series_dir, tmp_path / "out", formats=("nifti", "rtstruct"), device="cpu")
    assert [r.status for r in report.results] == ["failed"]
    assert "UID" in report.results[0].error
    assert not list((tmp_path / "out").glob("*_pred.nii.gz"))
    assert not list((tmp_path / "out").glob("*.dcm"))


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
