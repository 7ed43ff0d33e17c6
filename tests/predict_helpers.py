"""Shared by the prediction tests: a phantom CT, orientations of it, and checkpoints that segment it."""
from __future__ import annotations

from pathlib import Path

import nibabel.orientations as nio
import numpy as np
import pytest
import torch

from rtseg.data.normalization import Normalization
from rtseg.data.preprocess import Preprocessing
from rtseg.inference.bundle import InferenceBundle, save_bundle
from rtseg.io.volume import Volume
from rtseg.models.spec import build_model, model_spec

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
