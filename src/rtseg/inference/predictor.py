"""From a CT Volume to a label Volume on the same grid, with nothing but a checkpoint."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from rtseg.data.preprocess import GridInfo, Preprocessing, to_network_grid
from rtseg.data.resample import resize_array
from rtseg.io.checkpoint import load_checkpoint
from rtseg.io.volume import Volume
from rtseg.inference.sliding_window import sliding_window_predict
from rtseg.models.spec import build_model

log = logging.getLogger("rtseg")


@dataclass
class LoadedModel:
    """The segmenter and the data it needs, as saved by training."""

    model: nn.Module
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    preprocessing: Preprocessing
    patch_size: tuple[int, int, int]
    spec: dict[str, Any]
    iteration: int

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    data = load_checkpoint(path)
    model = build_model(data["model_spec"])
    model.load_state_dict(data["model"])
    model.to(device).eval()
    return LoadedModel(
        model,
        list(data["class_names"]),
        [tuple(c) for c in data["colors"]],  # type: ignore[misc]
        Preprocessing.from_dict(data["preprocessing"]),
        tuple(data["patch_size"]),  # type: ignore[arg-type]
        data["model_spec"],
        int(data.get("iteration", 0)),
    )


def labels_from_logits(logits: torch.Tensor, info: GridInfo) -> np.ndarray:
    """Argmax on the input grid. When the grids differ, logits are resampled one class at a
    time into a running maximum, so memory stays at two input-sized float arrays."""
    if info.network_shape == info.canonical_shape:
        labels = logits.argmax(0).to(torch.uint8).cpu().numpy()
    else:
        best = None
        labels_t = None
        for c in range(logits.shape[0]):
            up = resize_array(logits[c].float().cpu(), info.canonical_shape, is_label=False)
            if best is None:
                best, labels_t = up, torch.zeros(up.shape, dtype=torch.uint8)
            else:
                better = up > best
                best = torch.where(better, up, best)
                labels_t[better] = c  # type: ignore[index]
        labels = labels_t.numpy()  # type: ignore[union-attr]
    if info.reorientation is not None:
        labels = info.reorientation.undo(labels)
    return labels


class Predictor:
    """Sliding-window prediction with optional mirroring TTA; results land on the input grid."""

    def __init__(self, loaded: LoadedModel, device: torch.device | str = "cpu", overlap: float = 0.5, tta: bool = False,
                 amp: bool = True, batch_size: int = 2, channels_last: bool = True) -> None:
        self.m = loaded
        self.device = torch.device(device)
        self.overlap = overlap
        self.tta = tta
        self.amp = amp and self.device.type == "cuda"
        self.batch_size = batch_size
        self.fmt = torch.channels_last_3d if channels_last and self.device.type == "cuda" else torch.contiguous_format
        self.m.model.to(self.device).to(memory_format=self.fmt).eval()

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.fmt)
        if self.amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.m.model(x).float()
        return self.m.model(x).float()

    @torch.inference_mode()
    def logits(self, image: np.ndarray) -> torch.Tensor:
        """Blended logits (C, D, H, W) for a preprocessed network-grid image."""
        x = torch.from_numpy(image)[None, None].to(self.device)
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            # mirror along anterior-posterior and inferior-superior only: a left-right mirror
            # would swap paired organs (femoral heads, parotids) the network tells apart by side
            flips += [(3,), (4,), (3, 4)]
        acc = None
        for f in flips:
            xi = torch.flip(x, f) if f else x
            out = sliding_window_predict(self._net, xi, self.m.patch_size, self.m.n_classes, self.overlap, self.batch_size)
            prob = torch.softmax(torch.flip(out, f) if f else out, dim=1)
            acc = prob if acc is None else acc.add_(prob)
        assert acc is not None
        # averaged probabilities -> log space so downstream argmax/resampling treat them like logits
        return torch.log(acc[0] / len(flips) + 1e-8) if self.tta else acc[0]

    def predict(self, volume: Volume) -> Volume:
        image, info = to_network_grid(volume, self.m.preprocessing)
        logits = self.logits(image)
        labels = labels_from_logits(logits, info)
        return volume.with_array(labels.astype(np.uint8))
