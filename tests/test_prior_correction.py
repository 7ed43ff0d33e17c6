"""Prior correction of class-weighted losses: logits - log(w) undo the weights' bias at inference and validation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rtseg.data.normalization import Normalization
from rtseg.data.preprocess import Preprocessing
from rtseg.errors import DataError
from rtseg.inference.bundle import PRIOR_KEY, InferenceBundle, load_bundle, save_bundle
from rtseg.models.blocks import LogitOffset
from rtseg.models.spec import build_model, model_spec
from rtseg.training.losses import cross_entropy3d, frequency_weights

NAMES = ("background", "a", "b")


def test_weighted_ce_optimum_minus_log_weights_is_the_class_frequency() -> None:
    """Analytic: the minimiser of sum_c w_c p_c (-log q_c) is q_c ∝ w_c p_c, so softmax(z - log w) = p."""
    p = torch.tensor([0.90, 0.08, 0.02])
    counts = (p * 5000).long()
    target = torch.cat([torch.full((int(n),), c) for c, n in enumerate(counts)]).view(1, -1, 1, 1)
    w = frequency_weights(counts)
    z = torch.zeros(3, requires_grad=True)
    opt = torch.optim.LBFGS([z], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = z.view(1, 3, 1, 1, 1).expand(1, 3, target.shape[1], 1, 1)
        loss = cross_entropy3d(logits, target, weight=w)
        loss.backward()
        return loss

    opt.step(closure)
    biased = torch.softmax(z.detach(), 0)
    corrected = torch.softmax(z.detach() - torch.log(w), 0)
    assert biased[2] > 3 * p[2]  # the weights inflate the rare class ...
    assert torch.allclose(corrected, p, atol=1e-3)  # ... and the offset takes it back to its frequency


def _bundle(tmp_path: Path) -> tuple[InferenceBundle, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    spec = model_spec("ResUnet_3D", 1, 3, 4, 0.0)
    bundle = InferenceBundle(spec, NAMES, ((1, 2, 3), (4, 5, 6)), Preprocessing(Normalization("ct_window", (-1.0, 1.0))),
                             (16, 16, 16))
    return bundle, build_model(spec).state_dict()


def test_bundle_stores_the_offset_and_builds_a_network_that_adds_it(tmp_path: Path) -> None:
    bundle, weights = _bundle(tmp_path)
    w = torch.tensor([0.1, 2.0, 0.9])
    corrected = bundle.with_prior_correction(w, "dice_ce_weighted")
    save_bundle(tmp_path / "m.pt", corrected, weights)
    loaded, _, _ = load_bundle(tmp_path / "m.pt")
    assert loaded.logit_offset == pytest.approx(tuple(-np.log([0.1, 2.0, 0.9])))
    plain, net = bundle.build(weights), loaded.build(weights)
    assert isinstance(net, LogitOffset) and not net.training
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        diff = net(x) - plain(x)
    assert torch.allclose(diff, torch.tensor(loaded.logit_offset).view(1, 3, 1, 1, 1).float().expand_as(diff), atol=1e-5)
    assert bundle.logit_offset is None


def test_a_malformed_offset_is_one_clear_error(tmp_path: Path) -> None:
    bundle, weights = _bundle(tmp_path)
    bad = InferenceBundle.from_dict({**bundle.to_dict(), "extras": {PRIOR_KEY: {"logit_offset": [0.0, 1.0]}}})
    with pytest.raises(DataError, match=r"prior_correction.logit_offset = \[0.0, 1.0\]: expected 3 finite numbers"):
        bad.build(weights)


@pytest.mark.parametrize("correct", [True, False])
def test_training_with_class_weights_records_the_correction(tmp_path: Path, correct: bool) -> None:
    from rtseg.config.loader import config_from_dict
    from rtseg.training.trainer import fit
    from synth import make_legacy_npy_dataset

    data = make_legacy_npy_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=0, shape=(24, 24, 24))
    cfg = config_from_dict({
        "CUDA": False, "MODEL": {"BASE_FILTERS": 4}, "DATASET": {"PATH": str(data), "N_CLASSES": 6, "AUGMENT": False},
        "TRAINING": {"BATCH_SIZE": 1, "VAL_INTERVAL": 2, "ITER_MAX": 2, "AMP": False, "RUNS_DIR": str(tmp_path / "runs"),
                     "LOSS_FUNC": {"name": "dice_ce_weighted", "prior_correction": correct}}})
    summary = fit(cfg, "weighted")
    bundle, _, payload = load_bundle(Path(summary["run_dir"]) / "checkpoints" / "best.pt")
    if not correct:
        assert bundle.logit_offset is None
        return
    voxels = np.zeros(6)
    for f in sorted((data / "train" / "SEG").glob("*.npy")):  # the seed's layout: train/CT, train/SEG
        voxels += np.bincount(np.load(f).astype(np.int64).ravel(), minlength=6)[:6]
    assert voxels.sum() == 2 * 24**3
    expected = -torch.log(frequency_weights(torch.from_numpy(voxels)))
    assert bundle.extras[PRIOR_KEY]["loss"] == "dice_ce_weighted"
    assert bundle.logit_offset == pytest.approx(tuple(expected.tolist()), rel=1e-4)
    assert json.dumps(bundle.to_dict())  # JSON-ready
