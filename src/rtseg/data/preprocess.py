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
from rtseg.data.resample import resize_array, target_shape
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

    def _class_planes(self, logits: torch.Tensor, box: Box) -> Iterator[torch.Tensor]:
        """Each class's logits resampled onto the canonical input grid, one class at a time."""
        whole = tuple(logits.shape[1:]) == self.network_shape
        hi, lo = (float(logits.max()), float(logits.min())) if not whole else (0.0, 0.0)
        for c in range(logits.shape[0]):
            if whole:
                plane = logits[c].float()
            else:  # outside the box: background dominant, like the model's answer for air
                plane = torch.full(self.network_shape, hi if c == 0 else lo, dtype=torch.float32, device=logits.device)
                plane[box] = logits[c].float()
            up = resize_array(plane, self.canonical_shape, is_label=False)
            del plane  # before the caller works on ``up``: memory stays at the input-sized arrays
            yield up
            del up

    def restore_labels(self, logits: torch.Tensor, box: Optional[Box] = None) -> np.ndarray:
        """uint8 argmax on the input grid of ``logits`` (C, ...) covering ``box`` (default: the whole grid).

        When the grids differ, logits are resampled one class at a time into a
        running maximum, so memory stays at two input-sized float arrays.
        """
        box = box or full_box(self.network_shape)
        if self.network_shape == self.canonical_shape:
            labels = np.zeros(self.canonical_shape, dtype=np.uint8)
            labels[box] = logits.argmax(0).to(torch.uint8).cpu().numpy()
            return self._undo(labels)
        best: Optional[torch.Tensor] = None
        labels_t: Optional[torch.Tensor] = None
        for c, up in enumerate(self._class_planes(logits, box)):
            if best is None:
                best = up
                labels_t = torch.zeros(best.shape, dtype=torch.uint8, device=best.device)
            else:
                better = up > best
                labels_t.masked_fill_(better, c)  # type: ignore[union-attr]
                torch.maximum(best, up, out=best)
                del better
            del up
        return self._undo(labels_t.cpu().numpy())  # type: ignore[union-attr]

    def restore_probabilities(self, logits: torch.Tensor, box: Optional[Box] = None,
                              dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Softmax over classes on the input grid, (C, *input shape), float32 or float16.

        The same resampled logits as ``restore_labels``, so the argmax of the
        (float32) probabilities is its labels.
        """
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"probabilities are float32 or float16, got {np.dtype(dtype)}")
        box = box or full_box(self.network_shape)
        out = torch.empty((logits.shape[0],) + self.canonical_shape, dtype=torch.float32, device=logits.device)
        for c, up in enumerate(self._class_planes(logits, box)):
            out[c].copy_(up)
            del up
        out.sub_(out.amax(0, keepdim=True)).exp_()
        out.div_(out.sum(0, keepdim=True))
        return self._undo(out.to(torch.float16 if np.dtype(dtype) == np.float16 else torch.float32).cpu().numpy())


    def restore_full(self, logits: torch.Tensor, box: Optional[Box] = None, temperature: float = 1.0,
                     dtype: np.dtype | type = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """(``restore_labels(logits, box)``, ``restore_probabilities(logits / temperature, box, dtype)``) from one
        resampling of each class, written straight onto the input axes (no reoriented copy).

        The labels are the argmax of the resampled logits (the first class among equals, as
        ``restore_labels``); the temperature divides them after resampling (linear: the same up to rounding)."""
        if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ValueError(f"probabilities are float32 or float16, got {np.dtype(dtype)}")
        box = box or full_box(self.network_shape)
        in_shape = self.canonical_shape if self.reorientation is None else self.reorientation.in_shape
        out = np.empty((logits.shape[0],) + tuple(in_shape), dtype=np.float32)
        for c, up in enumerate(self._class_planes(logits, box)):
            plane = out[c] if self.reorientation is None else self.reorientation.view(out[c])
            np.copyto(plane, up.cpu().numpy())
            del up
        t = torch.from_numpy(out)
        labels_t, best = class_argmax(t)
        t.sub_(best)  # softmax, shifted by the largest logit (exp <= 1)
        if temperature != 1.0:
            t.div_(temperature)
        t.exp_()
        t.div_(t.sum(0, keepdim=True))
        return labels_t.numpy(), (out if np.dtype(dtype) == np.float32 else out.astype(np.float16))


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
