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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from rtseg.data.preprocess import Box, GridInfo, background_probabilities, full_box, to_network_grid
from rtseg.device import PRECISIONS, precision_name, resolve_precision
from rtseg.errors import ConfigError
from rtseg.inference.bundle import InferenceBundle, load_bundle
from rtseg.inference.sliding_window import (count_windows, inference_memory_format, network_runner,
                                            prepare_network, sliding_window_predict)
from rtseg.io.volume import Volume
from rtseg.models.spec import model_stride

log = logging.getLogger("rtseg")

#: TTA mirrors (tensor dims of N, C, D, H, W): none, anterior-posterior, inferior-superior, both. A
#: left-right mirror would swap paired organs (femoral heads, parotids) the network tells apart by side.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (4,), (3, 4))


@dataclass(frozen=True)
class NetworkOptions:
    """How the network runs over a volume: what ``rtseg predict`` and ``rtseg serve`` hand to every member
    of ``load_predictor`` as one object (the ``Predictor`` keywords of the same names)."""

    overlap: float = 0.5
    tta: bool = False
    batch_size: int = 2
    amp: bool = True
    compile: bool = False
    precision: str = "auto"  # auto | bf16 | fp32 (rtseg.device.resolve_precision)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")


@dataclass
class LoadedModel:
    """The segmenter, rebuilt from a checkpoint, and the checkpoint's inference contract."""

    model: nn.Module
    bundle: InferenceBundle
    source: str = ""


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    bundle, weights, _ = load_bundle(path)
    return LoadedModel(bundle.build(weights, str(path)).to(device), bundle, str(path))


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
    """Network-grid box holding every voxel of ``hu`` (the input grid) above ``air_hu``, plus ``margin_mm``.

    ``None`` if the volume holds only air. The box is at least ``roi`` wide
    (where the volume is) so windows see real context instead of padding. Its
    edges sit on multiples of the network's ``stride`` (or on the volume's end),
    so windows see the image at the same phase of the network's downsampling
    grid as a whole-volume run does (networks are not exactly shift-invariant);
    with ``overlap`` it is also aligned to the whole-volume window grid where
    that costs no extra window. Slice counts are taken on the input axes and carried
    to the network's by ``info.reorientation`` (no reoriented copy of the CT).
    """
    above = hu > air_hu
    plane = above.sum(axis=2, dtype=np.int64)
    profiles = [plane.sum(axis=1), plane.sum(axis=0), above.sum(axis=(0, 1), dtype=np.int64)]
    del above
    if info.reorientation is not None:
        profiles = info.reorientation.output_axes(profiles)
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


@dataclass
class PredictStats:
    """What the last ``predict`` did (for logs and benchmarks)."""

    seconds: dict[str, float] = field(default_factory=dict)
    windows_run: int = 0
    windows_full: int = 0
    box: Optional[Box] = None
    network_shape: tuple[int, int, int] = (0, 0, 0)
    precision: str = "fp32"


@dataclass
class Prediction:
    """One network run's results on the input grid (``Predictor.predict_full``)."""

    labels: np.ndarray  # uint8, as ``predict_labels`` gives them
    probabilities: np.ndarray  # (C, *shape) softmax, the checkpoint's temperature applied
    pass_labels: Optional[list[np.ndarray]] = None  # with TTA: each mirrored pass's own argmax labels
    labels_are_argmax: bool = True  # the labels are the probabilities' argmax (no post-processing in between)


class Predictor:
    """Sliding-window prediction with optional mirroring TTA; results land on the input grid.

    ``skip_air``: run the network only in the bounding box of voxels above
    ``air_hu`` (raw HU) plus ``air_margin_mm``; the rest is background.
    ``channels_last`` (default on): oneDNN on CPU and cuDNN on GPU run 3D convolutions
    faster in NDHWC (1.6x for ResUnet_3D on CPU, docs/PERFORMANCE.md). ``precision``:
    ``auto`` (bf16 where the hardware has it natively: a GPU, a CPU with AVX512-BF16/AMX; with ``amp``
    off fp32), ``bf16`` or ``fp32`` (``rtseg.device.resolve_precision``). ``temperature``: divides the
    logits before the softmax of the probabilities (never the labels); default the
    checkpoint's calibrated one (``rtseg calibrate``), 1 if it has none.
    """

    def __init__(self, loaded_model: LoadedModel, device: torch.device | str = "cpu", overlap: float = 0.5,
                 tta: bool = False, amp: bool = True, batch_size: int = 2, channels_last: bool = True,
                 skip_air: bool = True, air_hu: float = -500.0, air_margin_mm: float = 10.0, fold_bn: bool = True,
                 compile: bool = False, progress: bool = False, temperature: Optional[float] = None,
                 precision: str = "auto") -> None:
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        self.loaded_model = loaded_model
        self.device = torch.device(device)
        self.overlap = overlap
        self.tta = tta
        self.batch_size = batch_size
        self.skip_air = skip_air
        self.air_hu = air_hu
        self.air_margin_mm = air_margin_mm
        self.progress = progress
        self.temperature = loaded_model.bundle.temperature if temperature is None else float(temperature)
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be a positive number, got {self.temperature}")
        self.fmt = inference_memory_format(self.device, channels_last)
        self.dtype = resolve_precision(self.device, precision, amp)
        loaded_model.model.eval()
        self.stride = model_stride(loaded_model.model)
        net = fold_batchnorm(loaded_model.model) if fold_bn else loaded_model.model
        net = prepare_network(net, self.device, self.dtype, self.fmt)
        if compile:
            net = torch.compile(net, dynamic=False)  # type: ignore[assignment]
        self._run: Callable[[torch.Tensor], torch.Tensor] = network_runner(net, self.device, self.dtype, self.fmt)
        self.stats = PredictStats()

    @property
    def precision(self) -> str:
        """``bf16`` or ``fp32``: what the network computes in (``precision="auto"`` resolved)."""
        return precision_name(self.dtype)

    @classmethod
    def with_options(cls, loaded_model: LoadedModel, device: torch.device | str, options: NetworkOptions,
                     progress: bool = False) -> "Predictor":
        """A Predictor run as ``options`` say (the rest at their defaults)."""
        return cls(loaded_model, device, overlap=options.overlap, tta=options.tta, amp=options.amp,
                   batch_size=options.batch_size, compile=options.compile, progress=progress,
                   precision=options.precision)

    @property
    def bundle(self) -> InferenceBundle:
        """The checkpoint's contract: class names, colours, preprocessing, patch size."""
        return self.loaded_model.bundle

    @torch.inference_mode()
    def logits(self, image: np.ndarray | torch.Tensor,
               on_pass: Optional[Callable[[torch.Tensor], None]] = None) -> torch.Tensor:
        """Blended logits (C, D, H, W) for a preprocessed network-grid image (or a box of one).

        With TTA, ``on_pass`` is called with each mirrored pass's own logits (mirrored back)."""
        x = torch.as_tensor(image)[None, None].to(self.device, torch.float32)
        patch, n_classes = self.bundle.patch_size, self.bundle.n_classes
        flips = TTA_FLIPS if self.tta else TTA_FLIPS[:1]
        n_win = count_windows(x.shape[2:], patch, self.overlap) * len(flips)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=n_win, desc="windows", unit="win", leave=False, disable=None)  # no bar in a log file
        try:
            acc: Optional[torch.Tensor] = None
            for f in flips:
                xi = torch.flip(x, f) if f else x
                out = sliding_window_predict(self._run, xi, patch, n_classes, self.overlap,
                                             self.batch_size, progress=bar.update if bar is not None else None)
                if not self.tta:
                    return out[0]
                out = torch.flip(out, f) if f else out
                if on_pass is not None:
                    on_pass(out[0])
                prob = torch.softmax(out, dim=1)
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
        logits, info, box = self.network_logits(volume)
        if logits is None:
            return np.zeros(volume.shape, dtype=np.uint8)
        t0 = time.perf_counter()
        labels = info.restore_labels(logits, box)
        self.stats.seconds["labels"] = time.perf_counter() - t0
        return labels

    def predict_with_probabilities(self, volume: Volume, dtype: np.dtype | type = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 labels as ``predict_labels`` gives them, per-class probabilities (C, *volume.shape)),
        from one network run. Probabilities are the softmax of the logits (divided by the
        temperature) on the input grid (float32 or float16); they sum to one and, in float32,
        their argmax is the labels."""
        p = self.predict_full(volume, dtype, pass_labels=False)
        return p.labels, p.probabilities

    @torch.inference_mode()
    def predict_full(self, volume: Volume, dtype: np.dtype | type = np.float32, pass_labels: bool = True) -> Prediction:
        """Labels, probabilities and (with TTA and ``pass_labels``) each mirrored pass's labels, from one run.

        The passes' labels measure how much the mirrored runs disagree (contour QA)."""
        passes: Optional[list[np.ndarray]] = [] if (pass_labels and self.tta) else None
        logits, info, box = self.network_logits(volume, passes)
        if logits is None:
            labels = np.zeros(volume.shape, dtype=np.uint8)
            return Prediction(labels, background_probabilities(self.bundle.n_classes, volume.shape, dtype),
                              None if passes is None else [labels] * len(TTA_FLIPS))
        t0 = time.perf_counter()
        labels, probabilities = info.restore_full(logits, box, self.temperature, dtype)
        self.stats.seconds["labels"] = time.perf_counter() - t0
        return Prediction(labels, probabilities, passes)

    def network_logits(self, volume: Volume, passes: Optional[list[np.ndarray]] = None
                       ) -> tuple[Optional[torch.Tensor], GridInfo, Optional[Box]]:
        """The forward mapping, the body box and the network's logits in it (None: only air).

        With TTA, each mirrored pass's labels on the input grid are appended to ``passes``."""
        t0 = time.perf_counter()
        patch = self.bundle.patch_size
        image, info = to_network_grid(volume, self.bundle.preprocessing)
        full = full_box(info.network_shape)
        box = (body_box(volume.array, info, patch, self.air_hu, self.air_margin_mm, self.overlap, self.stride)
               if self.skip_air else full)
        stats = PredictStats(network_shape=info.network_shape, box=box, precision=self.precision,
                             windows_full=count_windows(info.network_shape, patch, self.overlap))
        self.stats = stats
        if box is None:
            log.info("volume holds no voxel above %g HU: predicted background everywhere", self.air_hu)
            stats.seconds = {"preprocess": time.perf_counter() - t0}
            return None, info, None
        crop = torch.from_numpy(np.ascontiguousarray(image[box]) if box != full else image)
        del image
        stats.windows_run = count_windows(crop.shape, patch, self.overlap)
        t1 = time.perf_counter()
        on_pass = None if passes is None else (lambda out: passes.append(info.restore_labels(out, box)))
        logits = self.logits(crop, on_pass)
        del crop
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        stats.seconds = {"preprocess": t1 - t0, "network": time.perf_counter() - t1}
        return logits, info, box


def plan_summary(stats: PredictStats) -> str:
    """One log line: how much of the volume the network ran on."""
    if stats.box is None:
        return "no body found: background everywhere"
    size = [s.stop - s.start for s in stats.box]
    return (f"network grid {list(stats.network_shape)}, body box {size}, "
            f"{stats.windows_run} of {stats.windows_full} windows, {stats.precision}")


__all__ = [
    "LoadedModel",
    "NetworkOptions",
    "PredictStats",
    "Prediction",
    "Predictor",
    "TTA_FLIPS",
    "body_box",
    "fold_batchnorm",
    "load_model",
    "plan_summary",
]
