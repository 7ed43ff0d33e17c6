"""Deep supervision: lower-scale logits in training mode only, nnU-Net's weights, a loss equal to the hand-computed
weighted sum, checkpoints with and without it, export unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rtseg.config.schema import LossConfig
from rtseg.data.normalization import Normalization
from rtseg.data.preprocess import Preprocessing
from rtseg.inference.bundle import InferenceBundle, save_bundle
from rtseg.inference.export import export_model
from rtseg.inference.predictor import load_model
from rtseg.models.spec import build_model, model_spec
from rtseg.training.losses import SegmentationLoss, deep_supervision_weights, scale_target

NAMES = ("background", "prostate", "bladder")


def _model(name: str, ds: bool, mrf: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(model_spec(name, 1, 3, 4, 0.0, mrf=mrf, deep_supervision=ds))


@pytest.mark.parametrize("name,depth,mrf", [("ResUnet_3D", 3, False), ("Deeper_ResUnet_3D", 4, False),
                                            ("ARPM_net", 3, False), ("ResUnet_3D", 3, True)])
def test_training_mode_returns_every_decoder_scale_eval_mode_one_tensor(name: str, depth: int, mrf: bool) -> None:
    model = _model(name, True, mrf).train()
    x = torch.randn(2, 1, 32, 32, 16)
    out = model(x)
    assert isinstance(out, list) and len(out) == depth
    for k, o in enumerate(out):
        assert tuple(o.shape) == (2, 3, 32 // 2**k, 32 // 2**k, 16 // 2**k)
    model.eval()
    with torch.no_grad():
        single = model(x)
    assert isinstance(single, torch.Tensor) and tuple(single.shape) == (2, 3, 32, 32, 16)


def test_padding_crops_every_scale() -> None:
    out = _model("ResUnet_3D", True).train()(torch.randn(2, 1, 20, 18, 12))
    assert [tuple(o.shape[2:]) for o in out] == [(20, 18, 12), (10, 9, 6), (5, 5, 3)]


def test_eval_output_equals_the_plain_network_with_the_same_weights() -> None:
    with_ds, plain = _model("ResUnet_3D", True).eval(), _model("ResUnet_3D", False).eval()
    missing = plain.load_state_dict({k: v for k, v in with_ds.state_dict().items() if not k.startswith("ds_heads.")})
    assert not missing.missing_keys and not missing.unexpected_keys
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(with_ds(x), plain(x))


def test_weights_are_nnunet_halving_normalised() -> None:
    assert deep_supervision_weights(1) == [1.0]
    np.testing.assert_allclose(deep_supervision_weights(3), [4 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(deep_supervision_weights(4), [8 / 15, 4 / 15, 2 / 15, 1 / 15])


def test_target_downsampling_is_nearest_exact() -> None:
    y = torch.randint(0, 3, (2, 16, 8, 12))
    y[0, 3, 1, 1] = 250  # the ignore index travels like any label
    np.testing.assert_array_equal(scale_target(y, (8, 4, 6)).numpy(), y.numpy()[:, 1::2, 1::2, 1::2])
    np.testing.assert_array_equal(scale_target(y, (4, 2, 3)).numpy(), y.numpy()[:, 2::4, 2::4, 2::4])


def test_loss_is_the_hand_computed_weighted_sum() -> None:
    torch.manual_seed(1)
    outs = [torch.randn(2, 3, 16, 16, 8), torch.randn(2, 3, 8, 8, 4), torch.randn(2, 3, 4, 4, 2)]
    y = torch.randint(0, 3, (2, 16, 16, 8))
    loss = SegmentationLoss(LossConfig(name="cross_entropy3d"))(outs, y)
    expected = (4 / 7 * F.cross_entropy(outs[0], y) + 2 / 7 * F.cross_entropy(outs[1], y[:, 1::2, 1::2, 1::2])
                + 1 / 7 * F.cross_entropy(outs[2], y[:, 2::4, 2::4, 2::4]))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    single = SegmentationLoss(LossConfig(name="cross_entropy3d"))(outs[0], y)
    assert float(single) == pytest.approx(float(F.cross_entropy(outs[0], y)), rel=1e-5)


def _checkpoint(tmp_path, ds: bool):
    spec = model_spec("ResUnet_3D", 1, 3, 4, 0.0, deep_supervision=ds)
    model = _model("ResUnet_3D", ds)
    pre = Preprocessing(Normalization("ct_window", (-1000.0, 1000.0)), None)
    path = tmp_path / f"ds{int(ds)}.pt"
    save_bundle(path, InferenceBundle(spec, NAMES, ((0, 255, 255), (204, 0, 102)), pre, (16, 16, 16)), model.state_dict())
    return path, spec


def test_checkpoints_with_and_without_deep_supervision_load_and_export(tmp_path) -> None:
    old_path, old_spec = _checkpoint(tmp_path, False)
    assert "deep_supervision" not in old_spec["kwargs"]  # the format written before the key existed
    new_path, new_spec = _checkpoint(tmp_path, True)
    assert new_spec["kwargs"]["deep_supervision"] is True
    x = torch.randn(1, 1, 16, 16, 16)
    for path in (old_path, new_path):
        loaded = load_model(path)
        with torch.no_grad():
            assert isinstance(loaded.model(x), torch.Tensor)
    out = export_model(new_path, tmp_path / "ds.onnx", format="onnx")  # the parity check runs inside
    assert out.is_file()


TRAIN_CFG = """
CUDA: false
MODEL: {{NAME: {model}, BASE_FILTERS: 2, DROPOUT: 0.0, DEEP_SUPERVISION: {ds}}}
DATASET: {{NAME: nifti, PATH: {path}, N_CLASSES: 6, NORMALIZE: ct_window, PATCH_SIZE: [16, 16, 16], AUGMENT: false}}
TRAINING: {{ITER_MAX: 2, BATCH_SIZE: 2, VAL_INTERVAL: 2, PRINT_INTERVAL: 1, LOSS_FUNC: {{name: dice_ce}}}}
"""


def test_training_with_deep_supervision_writes_a_checkpoint_predict_reads(tmp_path, capsys) -> None:
    from rtseg.cli.main import main
    from synth import make_nifti_dataset

    data = make_nifti_dataset(tmp_path / "data", n_train=2, n_val=1)
    cfg = tmp_path / "ds.yml"
    cfg.write_text(TRAIN_CFG.format(model="ResUnet_3D", ds="true", path=data))
    run = tmp_path / "run"
    assert main(["train", "-c", str(cfg), "--run-dir", str(run)]) == 0, capsys.readouterr().err
    loaded = load_model(run / "checkpoints" / "last.pt")
    assert loaded.bundle.model_spec["kwargs"]["deep_supervision"] is True
    assert loaded.model.ds_heads is not None
    bad = tmp_path / "bad.yml"
    bad.write_text(TRAIN_CFG.format(model="ResUnet_3D", ds="maybe", path=data))
    assert main(["train", "-c", str(bad), "--run-dir", str(tmp_path / "bad")]) == 2
    assert "DEEP_SUPERVISION" in capsys.readouterr().err
