"""ARPM-net: mean-field MRF, multi-scale segmenter, discriminator and the adversarial step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import ndimage

from rtseg.config.schema import AdversarialConfig
from rtseg.errors import DataError
from rtseg.models import create_model, list_models
from rtseg.models.arpm import ARPMNet, MultiScalePooling
from rtseg.models.discriminator import Discriminator3D, discriminator_input
from rtseg.models.mrf import MeanFieldMRF, WithMRF, mrf_smooth, with_mrf
from rtseg.training.adversarial import AdversarialStep

IGNORE = 250


def _softmax_np(u: np.ndarray) -> np.ndarray:
    e = np.exp(u - u.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _neighbour_sum_np(q: np.ndarray) -> np.ndarray:
    """Sum over the 26 neighbours with edge replication, per class (independent of torch conv)."""
    return np.stack([ndimage.uniform_filter(c, size=3, mode="nearest") * 27.0 - c for c in q])


def _potts_reference(u: np.ndarray, iterations: int, weight: float) -> np.ndarray:
    out = u
    for _ in range(iterations):
        out = u + weight * _neighbour_sum_np(_softmax_np(out))
    return out


# ---------------------------------------------------------------- MRF


def test_mrf_layer_shape_and_gradients() -> None:
    torch.manual_seed(0)
    mrf = MeanFieldMRF(3, iterations=3)
    x = torch.randn(2, 3, 6, 7, 9, requires_grad=True)
    out = mrf(x)
    assert out.shape == x.shape
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert mrf.spatial_weight.grad is not None and mrf.spatial_weight.grad.abs().sum() > 0
    assert mrf.compatibility.weight.grad is not None and mrf.compatibility.weight.grad.abs().sum() > 0


def test_mrf_layer_at_init_is_potts_mean_field_close_to_identity() -> None:
    torch.manual_seed(1)
    w = 0.5
    mrf = MeanFieldMRF(3, iterations=4, init_weight=w)
    u = torch.randn(1, 3, 5, 6, 7) * 2
    out = mrf(u).detach()
    # Neighbour average (sum / 26) times w: the Potts model's mean field with weight w / 26.
    ref = _potts_reference(u[0].numpy().astype(np.float64), 4, w / 26.0)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-5)
    delta = out - u
    assert delta.min() >= -1e-6 and delta.max() <= w + 1e-6


def test_mrf_layer_zero_iterations_is_identity_and_bad_args() -> None:
    u = torch.randn(1, 2, 4, 4, 4)
    assert torch.equal(MeanFieldMRF(2, iterations=0)(u), u)
    for kwargs in ({"n_classes": 1}, {"n_classes": 2, "iterations": -1}, {"n_classes": 2, "kernel_size": 4},
                   {"n_classes": 2, "kernel_size": 1}, {"n_classes": 2, "init_weight": -1.0}):
        with pytest.raises(ValueError):
            MeanFieldMRF(**kwargs)
    with pytest.raises(ValueError, match="expects logits"):
        MeanFieldMRF(3)(u)


def test_mrf_smooth_matches_reference_and_accepts_probs() -> None:
    rng = np.random.default_rng(0)
    u = rng.normal(size=(3, 6, 5, 7)).astype(np.float32)
    out = mrf_smooth(torch.from_numpy(u), iterations=3, weight=0.3)
    np.testing.assert_allclose(out.numpy(), _potts_reference(u.astype(np.float64), 3, 0.3), atol=1e-4)
    # Probabilities are turned into log-probabilities: same softmax as the logits give.
    probs = torch.softmax(torch.from_numpy(u), dim=0).unsqueeze(0)
    out_p = mrf_smooth(probs, iterations=3, weight=0.3)
    assert out_p.shape == probs.shape
    torch.testing.assert_close(torch.softmax(out_p[0], 0), torch.softmax(out, 0), atol=1e-4, rtol=0)
    with pytest.raises(ValueError):
        mrf_smooth(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError):
        mrf_smooth(torch.zeros(1, 2, 4, 4, 4), kernel_size=2)


def test_mrf_smooth_removes_isolated_flips() -> None:
    rng = np.random.default_rng(3)
    truth = np.zeros((24, 24, 24), dtype=np.int64)
    truth[:, :, 12:] = 1  # two classes split by a flat boundary
    noisy = truth.copy()
    flip = rng.random(truth.shape) < 0.04
    noisy[flip] = 1 - noisy[flip]
    p1 = np.where(noisy == 1, 0.75, 0.25)  # each voxel's unary favours its (noisy) label 3:1
    probs = torch.from_numpy(np.stack([1 - p1, p1])[None]).float()
    before = int((noisy != truth).sum())
    after_labels = mrf_smooth(probs, iterations=5, weight=1.0).argmax(1)[0].numpy()
    after = int((after_labels != truth).sum())
    assert before > 400
    assert after < before / 20  # isolated flips removed, the flat boundary kept


def test_with_mrf_wraps_backbone() -> None:
    backbone = create_model("ResUnet_3D", n_classes=3, base_filters=4)
    model = with_mrf(backbone, 3, iterations=2)
    assert isinstance(model, WithMRF) and model.backbone is backbone and isinstance(model.mrf, MeanFieldMRF)
    assert model.stride == 8
    out = model(torch.randn(1, 1, 9, 10, 11))
    assert out.shape == (1, 3, 9, 10, 11)


# ---------------------------------------------------------------- ARPM-net


def test_arpm_net_registered_odd_size_forward_backward() -> None:
    assert "ARPM_net" in list_models()
    torch.manual_seed(0)
    model = create_model("ARPM_net", in_channels=1, n_classes=6, base_filters=4, dropout=0.1, mrf_iterations=2)
    assert isinstance(model, ARPMNet) and isinstance(model.mrf, MeanFieldMRF)
    x = torch.randn(1, 1, 20, 28, 36)
    out = model(x)
    assert out.shape == (1, 6, 20, 28, 36)
    out.float().pow(2).mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.mrf.compatibility.weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0


def test_arpm_net_eval_is_deterministic_and_tiny_bottleneck_works() -> None:
    model = create_model("ARPM_net", n_classes=2, base_filters=4).eval()
    x = torch.randn(1, 1, 8, 9, 16)  # bottleneck 1x2x2: pools clamp to the map size
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize(
    "kwargs",
    [{"base_filters": 0}, {"n_classes": 1}, {"dropout": 1.0}, {"mrf_iterations": -1}, {"in_channels": 0},
     {"base_filters": 2.5}, {"unknown": 1}],
)
def test_arpm_net_bad_args(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        create_model("ARPM_net", **kwargs)


def test_multiscale_pooling_shape_and_scale_one_only() -> None:
    block = MultiScalePooling(8, scales=(1, 2, 4))
    x = torch.randn(2, 8, 3, 5, 7)
    assert block(x).shape == x.shape
    with pytest.raises(ValueError):
        MultiScalePooling(8, scales=())
    with pytest.raises(ValueError):
        MultiScalePooling(8, scales=(0, 2))


# ---------------------------------------------------------------- discriminator


def test_discriminator_shapes_and_input() -> None:
    d = Discriminator3D(in_channels=6, base_filters=4)
    x = torch.randn(2, 6, 20, 28, 32)
    assert d(x).shape == (2, 1, 3, 4, 4)
    assert d.score(x).shape == (2,)
    ct = torch.randn(2, 1, 4, 5, 6)
    probs = torch.softmax(torch.randn(2, 6, 4, 5, 6), 1)
    prod = discriminator_input(ct, probs)
    torch.testing.assert_close(prod, ct.expand_as(probs) * probs)
    torch.testing.assert_close(prod.sum(1, keepdim=True), ct)  # probabilities sum to one per voxel
    with pytest.raises(ValueError):
        discriminator_input(ct, probs[:, :, :3])
    with pytest.raises(ValueError):
        d(torch.randn(1, 5, 8, 8, 8))
    with pytest.raises(ValueError):
        Discriminator3D(in_channels=0)


# ---------------------------------------------------------------- adversarial step


class _TinySeg(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, n_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _batch(n_classes: int = 3, n: int = 2, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(n, size, size, size, dtype=torch.long)
    y[:, 4:10, 4:10, 4:10] = 1
    y[:, 10:14, 2:8, 8:14] = n_classes - 1
    x = torch.randn(n, 1, size, size, size, generator=g) * 0.1 + y.unsqueeze(1).float()
    return x, y


def _adv(n_classes: int = 3, **cfg: object) -> AdversarialStep:
    torch.manual_seed(0)
    return AdversarialStep(Discriminator3D(n_classes, base_filters=4), AdversarialConfig(**cfg), n_classes, IGNORE)


def test_generator_loss_zero_before_warmup_without_discriminator_call() -> None:
    adv = _adv(WARMUP_ITERS=5, LAMBDA=0.1)
    calls: list[int] = []
    adv.discriminator.register_forward_hook(lambda *a: calls.append(1))
    x, y = _batch()
    logits = _TinySeg(3)(x)
    zero = adv.generator_loss(x, logits, 4)
    assert zero.dtype == torch.float32 and zero.item() == 0.0 and not calls
    loss = adv.generator_loss(x, logits, 5)
    assert calls and torch.isfinite(loss) and loss.item() > 0


def test_adversarial_steps_update_discriminator_and_segmenter() -> None:
    adv = _adv(LAMBDA=1.0, D_LR=1e-3, D_STEPS=2)
    torch.manual_seed(1)
    seg = _TinySeg(3)
    opt = torch.optim.SGD(seg.parameters(), lr=0.1)
    d0 = [p.detach().clone() for p in adv.discriminator.parameters()]
    s0 = [p.detach().clone() for p in seg.parameters()]
    x, y = _batch()
    for it in range(3):
        opt.zero_grad()
        logits = seg(x)
        g = adv.generator_loss(x, logits, it, y)
        assert torch.isfinite(g) and g.item() > 0
        g.backward()
        assert all(p.grad is None for p in adv.discriminator.parameters())  # D frozen in the G pass
        assert seg.conv.weight.grad.abs().sum() > 0
        opt.step()
        stats = adv.discriminator_step(x, logits.detach(), y, it)
        assert set(stats) == {"d_loss", "d_acc", "d_real", "d_fake"}
        assert all(isinstance(v, float) and np.isfinite(v) for v in stats.values())
        assert 0.0 <= stats["d_acc"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(d0, adv.discriminator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(s0, seg.parameters()))


def test_discriminator_learns_truth_from_uniform_prediction() -> None:
    adv = _adv(LAMBDA=1.0, D_LR=2e-3, LABEL_SMOOTHING=0.0)
    x, y = _batch()
    fake_logits = torch.zeros(2, 3, 16, 16, 16)
    first = adv.discriminator_step(x, fake_logits, y, 0)
    for it in range(40):
        last = adv.discriminator_step(x, fake_logits, y, it)
    assert last["d_loss"] < first["d_loss"]
    assert last["d_real"] > last["d_fake"]
    assert last["d_acc"] == 1.0


def test_hinge_objective_and_autocast() -> None:
    adv = _adv(LAMBDA=0.5, OBJECTIVE="hinge")
    x, y = _batch(n=1, size=16)
    seg = _TinySeg(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = seg(x)
        g = adv.generator_loss(x, logits, 0, y)
        stats = adv.discriminator_step(x, logits.detach(), y, 0)
    assert g.dtype == torch.float32 and torch.isfinite(g) and g.item() != 0.0
    g.backward()
    assert seg.conv.weight.grad is not None and torch.isfinite(seg.conv.weight.grad).all()
    assert np.isfinite(stats["d_loss"])


class _RecordingD(nn.Module):
    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(n_classes, 1, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.conv(x)


def test_ignore_voxels_are_background_and_masked_in_both_inputs() -> None:
    d = _RecordingD(3)
    adv = AdversarialStep(d, AdversarialConfig(), 3, IGNORE)
    x, y = _batch(n=1, size=8)
    x = x.abs() + 1.0  # non-zero CT everywhere
    y[0, :2] = IGNORE
    logits = torch.randn(1, 3, 8, 8, 8)
    adv.discriminator_step(x, logits, y, 0)
    real, fake = d.seen[0], d.seen[1]
    ignored = (y == IGNORE).unsqueeze(1).expand_as(real)
    assert torch.all(real[ignored] == 0) and torch.all(fake[ignored] == 0)
    valid_y = y.clone()
    valid_y[y == IGNORE] = 0
    expected_real = x * torch.nn.functional.one_hot(valid_y, 3).permute(0, 4, 1, 2, 3) * (y != IGNORE).unsqueeze(1)
    torch.testing.assert_close(real, expected_real)
    torch.testing.assert_close(fake[~ignored], (x * torch.softmax(logits, 1))[~ignored])
    with pytest.raises(DataError, match="labels range"):
        adv.discriminator_step(x, logits, torch.full_like(y, 7), 0)


def test_state_dict_round_trip_restores_discriminator_and_optimizer() -> None:
    adv = _adv(D_LR=1e-3)
    x, y = _batch()
    logits = torch.randn(2, 3, 16, 16, 16)
    for it in range(3):
        adv.discriminator_step(x, logits, y, it)
    torch.manual_seed(123)
    other = AdversarialStep(Discriminator3D(3, base_filters=4), AdversarialConfig(D_LR=1e-3), 3, IGNORE)
    probe = discriminator_input(x, torch.softmax(logits, 1))
    adv.discriminator.eval()
    other.discriminator.eval()
    assert not torch.equal(adv.discriminator(probe), other.discriminator(probe))
    other.load_state_dict(adv.state_dict())
    torch.testing.assert_close(other.discriminator(probe), adv.discriminator(probe), rtol=0, atol=0)
    # The optimizer's moments came along: one more identical update keeps them identical.
    adv.discriminator_step(x, logits, y, 3)
    other.discriminator_step(x, logits, y, 3)
    for a, b in zip(adv.discriminator.parameters(), other.discriminator.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(DataError):
        other.load_state_dict({"discriminator": {}})
    wrong = AdversarialStep(Discriminator3D(3, base_filters=8), AdversarialConfig(), 3, IGNORE)
    with pytest.raises(DataError, match="does not match"):
        wrong.load_state_dict(adv.state_dict())
