"""Volume -> network grid (canonical orientation, target spacing, normalization) and back.

Everything needed to go back is recorded in ``GridInfo``; everything needed to
repeat the forward mapping at inference is ``Preprocessing`` (saved in checkpoints).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np
import torch

from rtseg.data.normalization import Normalization
from rtseg.data.orientation import Reorientation, to_canonical
from rtseg.data.resample import BoxResampler, resize_array, target_shape
from rtseg.io.volume import Volume


@dataclass(frozen=True)
class Preprocessing:
    normalization: Normalization
    target_spacing: Optional[tuple[float, float, float]] = None
    canonical: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "normalization": self.normalization.to_dict(),
            "target_spacing": list(self.target_spacing) if self.target_spacing else None,
            "canonical": self.canonical,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        ts = d.get("target_spacing")
        return cls(Normalization.from_dict(d["normalization"]), tuple(ts) if ts else None, bool(d.get("canonical", True)))  # type: ignore[arg-type]


Box = tuple[slice, slice, slice]
"""A box of the network grid, one slice per axis."""


def full_box(shape: tuple[int, ...]) -> Box:
    return tuple(slice(0, int(s)) for s in shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class GridInfo:
    """The input grid and how the network grid was derived from it: the one way back.

    Every result goes back to the input grid through here: labels (``restore``),
    argmax of logits (``restore_labels``) and per-class probabilities
    (``restore_probabilities``). Logits may cover only a ``box`` of the network
    grid (the body box of ``Predictor``): outside it the answer is background,
    filled with background as the largest logit seen and every other class as the smallest.
    """

    reorientation: Optional[Reorientation]
    canonical_shape: tuple[int, int, int]
    network_shape: tuple[int, int, int]
    network_spacing: tuple[float, float, float]

    def _undo(self, array: np.ndarray) -> np.ndarray:
        return array if self.reorientation is None else self.reorientation.undo(array)

    def restore(self, array: np.ndarray | torch.Tensor, is_label: bool) -> np.ndarray:
        """Map a whole network-grid array (D,H,W) or (C,D,H,W) back onto the input grid."""
        out = resize_array(array, self.canonical_shape, is_label)
        return self._undo(out.numpy() if isinstance(out, torch.Tensor) else out)

    def _class_planes(self, logits: torch.Tensor, box: Box) -> Iterator[tuple[Box, torch.Tensor]]:
        """Each class's logits resampled onto the canonical input grid, one class at a time, as (region, values):
        only the region the box reaches is computed (``BoxResampler``); outside it every class holds its fill
        (``_fills``), which is the whole-grid answer there. A yielded tensor is valid until the next one."""
        if tuple(logits.shape[1:]) == self.network_shape:
            for c in range(logits.shape[0]):
                yield full_box(self.canonical_shape), resize_array(logits[c].float(), self.canonical_shape, is_label=False)
            return
        resampler = BoxResampler(box, self.network_shape, self.canonical_shape, logits.device)
        plane = torch.empty(resampler.shape, dtype=torch.float32, device=logits.device)
        for c, fill in enumerate(self._fills(logits)):
            yield resampler.region, resampler(logits[c], fill, plane)

    def _fills(self, logits: torch.Tensor) -> list[float]:
        """Logits outside the box: background the largest logit seen, every other class the smallest (the
        model's answer for air); none where the logits cover the whole grid."""
        if tuple(logits.shape[1:]) == self.network_shape:
            return []
        hi, lo = float(logits.max()), float(logits.min())
        return [hi] + [lo] * (logits.shape[0] - 1)

    def _softmax_outside(self, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """The probabilities (C,) outside the region the box reaches, by the same steps as inside it."""
        t = torch.tensor(self._fills(logits), dtype=torch.float32)
        t = ((t - t.max()) / temperature).exp()
        return t / t.sum()

    def restore_labels(self, logits: torch.Tensor, box: Optional[Box] = None) -> np.ndarray:
        """uint8 argmax on the input grid of ``logits`` (C, ...) covering ``box`` (default: the whole grid).

        Logits are resampled one class at a time into a running maximum over the region the box reaches
        (outside it: background), so memory stays at two region-sized float arrays."""
        box = box or full_box(self.network_shape)
        labels = np.zeros(self.canonical_shape, dtype=np.uint8)
        best: Optional[torch.Tensor] = None
        labels_t: Optional[torch.Tensor] = None
        region = full_box(self.canonical_shape)
        for c, (region, up) in enumerate(self._class_planes(logits, box)):
            if best is None:
                best = up.clone()  # ``up`` may be the caller's logits themselves (no resampling): never write into them
                labels_t = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
            else:
                labels_t.masked_fill_(up > best, c)  # type: ignore[union-attr]
                torch.maximum(best, up, out=best)
            del up
        labels[region] = labels_t.cpu().numpy()  # type: ignore[union-attr]
        return self._undo(labels)

    def restore_probabilities(self, logits: torch.Tensor, box: Optional[Box] = None,
                              dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Softmax over classes on the input grid, (C, *input shape), float32 or float16.

        The same resampled logits as ``restore_labels``, so the argmax of the
        (float32) probabilities is its labels.
        """
        return self.restore_full(logits, box, 1.0, dtype)[1]

    def restore_full(self, logits: torch.Tensor, box: Optional[Box] = None, temperature: float = 1.0,
                     dtype: np.dtype | type = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(``restore_labels(logits, box)``, ``restore_probabilities(logits / temperature, box, dtype)``) from one
        resampling of each class over the region the box reaches, written straight onto the input axes (no
        reoriented copy); outside the region the answer is one constant per class.

        The labels are the argmax of the resampled logits (the first class among equals, as
        ``restore_labels``); the temperature divides them after resampling (linear: the same up to rounding)."""
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"probabilities are float32 or float16, got {np.dtype(dtype)}")
        box = box or full_box(self.network_shape)
        in_shape = self.canonical_shape if self.reorientation is None else self.reorientation.in_shape
        n = logits.shape[0]
        if tuple(logits.shape[1:]) == self.network_shape:  # the whole grid: straight into the output, in place
            out = np.empty((n,) + tuple(in_shape), dtype=np.float32)
            for c, (_, up) in enumerate(self._class_planes(logits, box)):
                np.copyto(out[c] if self.reorientation is None else self.reorientation.view(out[c]), up.cpu().numpy())
                del up
            labels_t = _softmax_in_place(torch.from_numpy(out), temperature)  # per voxel: any axis order will do
            return labels_t.numpy(), (out if np.dtype(dtype) == np.float32 else out.astype(np.float16))
        scores: Optional[torch.Tensor] = None
        for c, (region, up) in enumerate(self._class_planes(logits, box)):
            if scores is None:
                scores = torch.empty((n,) + tuple(up.shape), dtype=torch.float32, device=up.device)
            scores[c] = up
            del up
        assert scores is not None
        labels_r = _softmax_in_place(scores, temperature).cpu().numpy()
        outside = self._softmax_outside(logits, temperature).numpy()
        out = np.empty((n,) + tuple(in_shape), dtype=np.dtype(dtype))
        labels = np.zeros(in_shape, dtype=np.uint8)
        for c in range(n):
            plane = out[c] if self.reorientation is None else self.reorientation.view(out[c])
            plane.fill(outside[c])
            plane[region] = scores[c].cpu().numpy()
        (labels if self.reorientation is None else self.reorientation.view(labels))[region] = labels_r
        return labels, out


def _softmax_in_place(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax over the classes of ``scores`` (C, ...) in place (shifted by the largest: exp <= 1); returns the
    uint8 argmax taken before it (the first class among equals)."""
    labels, best = class_argmax(scores)
    scores.sub_(best)
    if temperature != 1.0:
        scores.div_(temperature)
    scores.exp_()
    scores.div_(scores.sum(0, keepdim=True))
    return labels


def class_argmax(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 argmax over the classes of ``scores`` (C, ...), the largest score), the first class among equals as
    ``torch.argmax``; one pass over contiguous class planes (``argmax(0)`` over a large volume is ~10x slower)."""
    best = scores[0].clone()
    labels = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
    for c in range(1, scores.shape[0]):
        labels.masked_fill_(scores[c] > best, c)
        torch.maximum(best, scores[c], out=best)
    return labels, best


def background_probabilities(n_classes: int, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """(C, *shape): certain background, for a volume where the network did not run at all."""
    out = np.zeros((n_classes,) + tuple(shape), dtype=dtype)
    out[0] = 1
    return out


def to_network_grid(volume: Volume, preprocessing: Preprocessing, is_label: bool = False) -> tuple[np.ndarray, GridInfo]:
    """Reorient + resample (+ normalize images). Labels use nearest neighbour."""
    vol, tr = to_canonical(volume) if preprocessing.canonical else (volume, None)
    spacing = vol.spacing
    shape = vol.shape
    if preprocessing.target_spacing is not None:
        shape = target_shape(vol.shape, vol.spacing, preprocessing.target_spacing)
        spacing = tuple(float(s) for s in preprocessing.target_spacing)  # type: ignore[assignment]
    info = GridInfo(tr, vol.shape, shape, spacing)  # type: ignore[arg-type]
    if is_label:
        arr = resize_array(vol.array, shape, is_label=True).numpy().astype(np.uint8)
    else:
        arr = preprocessing.normalization(vol.array)
        if shape != vol.shape:
            arr = resize_array(arr, shape, is_label=False).numpy()
    return np.ascontiguousarray(arr), info
