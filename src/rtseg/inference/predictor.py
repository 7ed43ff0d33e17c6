"""From a CT Volume to a label Volume on the same grid, with nothing but a checkpoint.

Speed without changing the answer (checked against MONAI in benchmarks/predict.py):
the network only runs inside the body's bounding box (every voxel above
``air_hu`` HU, plus a margin, on the network grid); outside it the result is
background, which is what a segmentation model predicts for air anyway.
Conv+BatchNorm pairs are folded for inference, windows are batched, and on a
GPU everything stays on the device (bf16 autocast, channels-last) until the
final uint8 labels.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from rtseg.data.orientation import to_canonical
from rtseg.data.preprocess import GridInfo, Preprocessing, to_network_grid
from rtseg.data.resample import resize_array
from rtseg.errors import ConfigError, DataError
from rtseg.inference.bundle import load_bundle
from rtseg.inference.sliding_window import count_windows, sliding_window_predict
from rtseg.io.volume import Volume
from rtseg.models.spec import model_stride

log = logging.getLogger("rtseg")

Box = tuple[slice, slice, slice]


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
    plan: Optional[dict[str, Any]] = None
    source: str = ""

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def metadata(self) -> dict[str, Any]:
        """The checkpoint's inference metadata (JSON-ready), as exporters embed it."""
        return {
            "model_spec": self.spec,
            "class_names": list(self.class_names),
            "colors": [list(c) for c in self.colors],
            "preprocessing": self.preprocessing.to_dict(),
            "patch_size": list(self.patch_size),
            "plan": self.plan,
            "iteration": self.iteration,
        }


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    bundle, weights, _ = load_bundle(path)
    model = bundle.build(weights, str(path)).to(device)
    return LoadedModel(model, list(bundle.class_names), list(bundle.colors), bundle.preprocessing, bundle.patch_size,
                       bundle.model_spec, bundle.iteration, bundle.plan, str(path))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy with every ``Conv3d -> BatchNorm3d`` pair inside an ``nn.Sequential`` folded into one conv.

    Exact up to float rounding in eval mode; saves one full pass over each feature map.
    """
    out = copy.deepcopy(model).eval()
    for mod in list(out.modules()):
        if not isinstance(mod, nn.Sequential):
            continue
        for i in range(len(mod) - 1):
            conv, bn = mod[i], mod[i + 1]
            if type(conv) is nn.Conv3d and isinstance(bn, nn.BatchNorm3d) and bn.track_running_stats:
                mod[i] = fuse_conv_bn_eval(conv, bn)
                mod[i + 1] = nn.Identity()
    return out


def full_box(shape: tuple[int, ...]) -> Box:
    return tuple(slice(0, int(s)) for s in shape)  # type: ignore[return-value]


def _aligned(lo: int, hi: int, n: int, roi: int, overlap: float) -> tuple[int, int]:
    """``[lo, hi)`` widened onto the whole-volume window grid when that costs no extra window.

    Windows inside the box then coincide with the whole-volume run's, so the
    blended logits are the same there, not just close."""
    step = max(1, int(roi * (1.0 - overlap)))
    a = (lo // step) * step
    k = max(0, -(-(hi - a - roi) // step)) + 1
    b = min(n, a + roi + (k - 1) * step)
    if b < hi or b - a < roi:
        return lo, hi
    return (a, b) if count_windows((b - a,), (roi,), overlap) <= count_windows((hi - lo,), (roi,), overlap) else (lo, hi)


def body_box(hu: np.ndarray, info: GridInfo, roi: tuple[int, int, int], air_hu: float = -500.0,
             margin_mm: float = 10.0, overlap: Optional[float] = None, stride: int = 1) -> Optional[Box]:
    """Network-grid box holding every voxel of ``hu`` (canonical grid) above ``air_hu``, plus ``margin_mm``.

    ``None`` if the volume holds only air. The box is at least ``roi`` wide
    (where the volume is) so windows see real context instead of padding. Its
    edges sit on multiples of the network's ``stride`` (or on the volume's end),
    so windows see the image at the same phase of the network's downsampling
    grid as a whole-volume run does (networks are not exactly shift-invariant);
    with ``overlap`` it is also aligned to the whole-volume window grid where
    that costs no extra window.
    """
    above = hu > air_hu
    plane = above.sum(axis=2, dtype=np.int64)
    profiles = (plane.sum(axis=1), plane.sum(axis=0), above.sum(axis=(0, 1), dtype=np.int64))
    del above
    box = []
    for ax, prof in enumerate(profiles):
        idx = np.flatnonzero(prof)
        if idx.size == 0:
            return None
        n, m = info.canonical_shape[ax], info.network_shape[ax]
        margin = int(math.ceil(margin_mm / info.network_spacing[ax]))
        lo = max(0, int(math.floor(idx[0] * m / n)) - margin)
        hi = min(m, int(math.ceil((idx[-1] + 1) * m / n)) + margin)
        lo = (lo // stride) * stride
        hi = min(m, lo + -(-(hi - lo) // stride) * stride)
        short = roi[ax] - (hi - lo)
        if short > 0:  # grow to one window, centred, inside the volume
            lo = max(0, ((lo - short // 2) // stride) * stride)
            hi = min(m, lo + roi[ax])
            lo = max(0, hi - roi[ax])
        if overlap is not None and hi - lo >= roi[ax]:
            lo, hi = _aligned(lo, hi, m, roi[ax], overlap)
        box.append(slice(lo, hi))
    return tuple(box)  # type: ignore[return-value]


def labels_from_logits(logits: torch.Tensor, info: GridInfo, box: Optional[Box] = None) -> np.ndarray:
    """Argmax on the input grid.

    ``logits`` (C, ...) cover ``box`` of the network grid (default: all of it);
    outside the box the answer is background. When the grids differ, logits are
    resampled one class at a time into a running maximum, so memory stays at
    two input-sized float arrays.
    """
    box = box or full_box(info.network_shape)
    whole = tuple(logits.shape[1:]) == info.network_shape
    if info.network_shape == info.canonical_shape:
        labels = np.zeros(info.canonical_shape, dtype=np.uint8)
        labels[box] = logits.argmax(0).to(torch.uint8).cpu().numpy()
    else:
        hi, lo = (float(logits.max()), float(logits.min())) if not whole else (0.0, 0.0)
        best: Optional[torch.Tensor] = None
        labels_t: Optional[torch.Tensor] = None
        for c in range(logits.shape[0]):
            if whole:
                plane = logits[c].float()
            else:  # outside the box: background dominant, like the model's answer for air
                plane = torch.full(info.network_shape, hi if c == 0 else lo, dtype=torch.float32, device=logits.device)
                plane[box] = logits[c].float()
            up = resize_array(plane, info.canonical_shape, is_label=False)
            del plane
            if best is None:
                best = up
                labels_t = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
            else:
                better = up > best
                labels_t.masked_fill_(better, c)  # type: ignore[union-attr]
                torch.maximum(best, up, out=best)
                del better
            del up
        labels = labels_t.cpu().numpy()  # type: ignore[union-attr]
    if info.reorientation is not None:
        labels = info.reorientation.undo(labels)
    return labels


@dataclass
class PredictStats:
    """What the last ``predict`` did (for logs and benchmarks)."""

    seconds: dict[str, float] = field(default_factory=dict)
    windows_run: int = 0
    windows_full: int = 0
    box: Optional[Box] = None
    network_shape: tuple[int, int, int] = (0, 0, 0)


class Predictor:
    """Sliding-window prediction with optional mirroring TTA; results land on the input grid.

    ``skip_air``: run the network only in the bounding box of voxels above
    ``air_hu`` (raw HU) plus ``air_margin_mm``; the rest is background.
    ``channels_last`` (default on): oneDNN on CPU and cuDNN on GPU run 3D convolutions
    faster in NDHWC (1.6x for ResUnet_3D on CPU, docs/PERFORMANCE.md). ``amp``: bf16
    autocast, CUDA only.
    """

    def __init__(self, loaded: LoadedModel, device: torch.device | str = "cpu", overlap: float = 0.5, tta: bool = False,
                 amp: bool = True, batch_size: int = 2, channels_last: bool = True, skip_air: bool = True,
                 air_hu: float = -500.0, air_margin_mm: float = 10.0, fold_bn: bool = True, compile: bool = False,
                 progress: bool = False) -> None:
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.m = loaded
        self.device = torch.device(device)
        self.overlap = overlap
        self.tta = tta
        self.amp = amp and self.device.type == "cuda"
        self.batch_size = batch_size
        self.skip_air = skip_air
        self.air_hu = air_hu
        self.air_margin_mm = air_margin_mm
        self.progress = progress
        self.fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.m.model.eval()
        self.stride = model_stride(self.m.model)
        net = fold_batchnorm(self.m.model) if fold_bn else self.m.model
        self.net: Callable[[torch.Tensor], torch.Tensor] = net.to(self.device).to(memory_format=self.fmt).eval()
        if compile:
            self.net = torch.compile(self.net, dynamic=False)  # type: ignore[assignment]
        self.stats = PredictStats()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.fmt)
        if self.amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.net(x).float()
        return self.net(x).float()

    @torch.inference_mode()
    def logits(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Blended logits (C, D, H, W) for a preprocessed network-grid image (or a box of one)."""
        x = torch.as_tensor(image)[None, None].to(self.device, torch.float32)
        flips: list[tuple[int, ...]] = [()]
        if self.tta:
            # mirror along anterior-posterior and inferior-superior only: a left-right mirror
            # would swap paired organs (femoral heads, parotids) the network tells apart by side
            flips += [(3,), (4,), (3, 4)]
        n_win = count_windows(x.shape[2:], self.m.patch_size, self.overlap) * len(flips)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=n_win, desc="windows", unit="win", leave=False)
        try:
            acc: Optional[torch.Tensor] = None
            for f in flips:
                xi = torch.flip(x, f) if f else x
                out = sliding_window_predict(self._run, xi, self.m.patch_size, self.m.n_classes, self.overlap,
                                             self.batch_size, progress=bar.update if bar is not None else None)
                if not self.tta:
                    return out[0]
                prob = torch.softmax(torch.flip(out, f) if f else out, dim=1)
                acc = prob if acc is None else acc.add_(prob)
        finally:
            if bar is not None:
                bar.close()
        assert acc is not None
        # averaged probabilities -> log space so downstream argmax/resampling treat them like logits
        return torch.log(acc[0] / len(flips) + 1e-8)

    def predict(self, volume: Volume) -> Volume:
        return volume.with_array(self.predict_labels(volume))

    @torch.inference_mode()
    def predict_labels(self, volume: Volume) -> np.ndarray:
        """uint8 labels on ``volume``'s grid."""
        t0 = time.perf_counter()
        spec = self.m.preprocessing
        can, tr = to_canonical(volume) if spec.canonical else (volume, None)
        image, net_info = to_network_grid(can, replace(spec, canonical=False))
        info = GridInfo(tr, can.shape, net_info.network_shape, net_info.network_spacing)
        full = full_box(info.network_shape)
        box = (body_box(can.array, info, self.m.patch_size, self.air_hu, self.air_margin_mm, self.overlap,
                        self.stride) if self.skip_air else full)
        del can
        stats = PredictStats(network_shape=info.network_shape, box=box,
                             windows_full=count_windows(info.network_shape, self.m.patch_size, self.overlap))
        self.stats = stats
        if box is None:
            log.info("volume holds no voxel above %g HU: predicted background everywhere", self.air_hu)
            stats.seconds = {"preprocess": time.perf_counter() - t0}
            return np.zeros(volume.shape, dtype=np.uint8)
        crop = torch.from_numpy(np.ascontiguousarray(image[box]) if box != full else image)
        del image
        stats.windows_run = count_windows(crop.shape, self.m.patch_size, self.overlap)
        t1 = time.perf_counter()
        logits = self.logits(crop)
        del crop
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t2 = time.perf_counter()
        labels = labels_from_logits(logits, info, box)
        t3 = time.perf_counter()
        stats.seconds = {"preprocess": t1 - t0, "network": t2 - t1, "labels": t3 - t2}
        return labels


def plan_summary(stats: PredictStats) -> str:
    """One log line: how much of the volume the network ran on."""
    if stats.box is None:
        return "no body found: background everywhere"
    size = [s.stop - s.start for s in stats.box]
    return (f"network grid {list(stats.network_shape)}, body box {size}, "
            f"{stats.windows_run} of {stats.windows_full} windows")


__all__ = [
    "LoadedModel",
    "PredictStats",
    "Predictor",
    "body_box",
    "fold_batchnorm",
    "labels_from_logits",
    "load_model",
    "plan_summary",
]
