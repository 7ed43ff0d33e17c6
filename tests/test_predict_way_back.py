"""The one way back to the input grid (``GridInfo``): labels and per-class probabilities, with body box,
resampling and reorientation; and checkpoints written before the inference bundle existed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from rtseg.data.preprocess import GridInfo, Preprocessing, to_network_grid
from rtseg.inference.bundle import InferenceBundle, load_bundle
from rtseg.inference.predictor import Predictor, load_model
from rtseg.io.checkpoint import save_checkpoint
from rtseg.io.volume import Volume, affine_from_spacing
from rtseg.models.spec import build_model

from predict_helpers import COLORS, NAMES, ORIENTATIONS, WINDOW, ckpt, ckpt_coarse, phantom, reoriented  # noqa: F401


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


@pytest.mark.parametrize("flip", [1, -1])
def test_way_back_over_the_box_region_equals_the_whole_grid_resampled(flip: int) -> None:
    """Odd ratios (up, down and none), a permuted/flipped input and a temperature: the labels and probabilities
    computed only where the box reaches equal the whole filled grid resampled by torch and softmaxed in float64."""
    from rtseg.io.orientation import Reorientation

    ornt = np.array([[1, flip], [2, 1], [0, 1]], dtype=float)  # input axis i -> canonical axis ornt[i, 0]
    in_shape = (23, 37, 41)
    canonical = (41, 23, 37)
    info = GridInfo(Reorientation(ornt, in_shape), canonical, (64, 23, 19), (1.0, 1.0, 1.0))
    box = (slice(9, 50), slice(4, 20), slice(2, 15))
    rng = np.random.default_rng(2)
    part = torch.from_numpy(rng.normal(size=(4, 41, 16, 13)).astype(np.float32))
    full = torch.empty((4, 64, 23, 19))
    full[0], full[1:] = float(part.max()), float(part.min())
    full[(slice(None),) + box] = part
    up = F.interpolate(full[None].double(), size=canonical, mode="trilinear", align_corners=False)[0].numpy() / 1.7
    ref = np.exp(up - up.max(0))
    ref = info.reorientation.undo(ref / ref.sum(0))
    labels, probs = info.restore_full(part, box, temperature=1.7)
    assert probs.shape == (4, *in_shape) and labels.shape == in_shape
    np.testing.assert_allclose(probs, ref, atol=5e-6)  # float32 against float64
    np.testing.assert_array_equal(labels, ref.argmax(0))
    np.testing.assert_array_equal(info.restore_labels(part, box), labels)
    assert len(np.unique(labels)) == 4


def test_a_split_folder_predicts_the_cts_and_skips_label_files(tmp_path: Path) -> None:
    """A NIfTI split folder holds <id>_ct and <id>_labels: only the CTs are cases (earlier outputs neither)."""
    from rtseg.inference.pipeline import find_cases
    from rtseg.io.nifti import write_nifti
    from rtseg.io.volume import Volume

    vol = Volume(np.zeros((4, 4, 4), np.int16), np.eye(4))
    for name in ("p1_ct", "p1_labels", "p2_ct", "p2_labels", "p1_pred", "p2_prob", "p3"):
        write_nifti(vol, tmp_path / f"{name}.nii.gz")
    assert sorted((c.name, c.path.name) for c in find_cases(tmp_path)) == [
        ("p1", "p1_ct.nii.gz"), ("p2", "p2_ct.nii.gz"), ("p3", "p3.nii.gz")]
