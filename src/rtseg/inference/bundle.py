"""The checkpoint contract: what travels with the weights so inference needs no training code.

``InferenceBundle`` is the one owner of the keys a checkpoint must hold for prediction
(timm's pretrained-config idea, nnU-Net's plans-with-the-model idea). Training writes it,
inference, export, serving and the benchmarks read it; nothing else names those keys.
``from_dict`` reads every format written so far (format 1 had no ``bundle_version``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from rtseg.data.preprocess import Preprocessing
from rtseg.errors import DataError
from rtseg.io.checkpoint import load_checkpoint, save_checkpoint
from rtseg.labels import RGB
from rtseg.models.blocks import LogitOffset
from rtseg.models.spec import build_model

BUNDLE_VERSION = 2
REQUIRED_KEYS = ("model_spec", "class_names", "colors", "preprocessing", "patch_size")
CALIBRATION_KEY = "calibration"
"""``extras[CALIBRATION_KEY]``: the softmax temperature fitted by ``rtseg calibrate`` and how it was measured."""
PRIOR_KEY = "prior_correction"
"""``extras[PRIOR_KEY]``: ``logit_offset`` per class (-log of the loss's class weights) and the loss it undoes."""


@dataclass(frozen=True)
class InferenceBundle:
    """Model architecture, label meaning and the forward mapping to the network grid."""

    model_spec: dict[str, Any]
    class_names: tuple[str, ...]
    colors: tuple[RGB, ...]
    preprocessing: Preprocessing
    patch_size: tuple[int, int, int]
    plan: Optional[dict[str, Any]] = None
    iteration: int = 0
    extras: dict[str, Any] = field(default_factory=dict)  # JSON-ready additions (e.g. QA statistics)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def organ_stats(self) -> Optional[dict[str, Any]]:
        """The training data's organ statistics for contour QA (``plan["organ_stats"]``), None in older checkpoints."""
        return (self.plan or {}).get("organ_stats")

    @property
    def temperature(self) -> float:
        """Softmax temperature for probabilities: the calibrated one, or 1 (uncalibrated)."""
        value = (self.extras.get(CALIBRATION_KEY) or {}).get("temperature", 1.0)
        try:
            t = float(value)
        except (TypeError, ValueError):
            t = float("nan")
        if not (t > 0 and t < float("inf")):
            raise DataError(f"checkpoint extras.{CALIBRATION_KEY}.temperature = {value!r}: expected a positive number")
        return t

    @property
    def logit_offset(self) -> Optional[tuple[float, ...]]:
        """Per-class offset added to the network's logits (prior correction of a class-weighted loss), or None."""
        entry = self.extras.get(PRIOR_KEY)
        if not entry:
            return None
        values = entry.get("logit_offset") if isinstance(entry, dict) else None
        try:
            offset = tuple(float(v) for v in values)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            offset = ()
        if len(offset) != self.n_classes or not all(abs(v) < float("inf") for v in offset):
            raise DataError(f"checkpoint extras.{PRIOR_KEY}.logit_offset = {values!r}: expected {self.n_classes} finite numbers")
        return offset

    def with_prior_correction(self, class_weights: "torch.Tensor", loss: str) -> "InferenceBundle":
        """A copy that undoes the loss's class weights at inference: logits - log(weight)."""
        offset = [-float(v) for v in torch.log(class_weights.double())]
        return replace(self, extras={**self.extras, PRIOR_KEY: {"logit_offset": offset, "loss": loss}})

    def with_calibration(self, calibration: dict[str, Any]) -> "InferenceBundle":
        """A copy whose extras hold ``calibration`` (must contain ``temperature``)."""
        return replace(self, extras={**self.extras, CALIBRATION_KEY: dict(calibration)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metadata, as saved next to the weights and embedded by exporters."""
        return {
            "bundle_version": BUNDLE_VERSION,
            "model_spec": self.model_spec,
            "class_names": list(self.class_names),
            "colors": [list(c) for c in self.colors],
            "preprocessing": self.preprocessing.to_dict(),
            "patch_size": list(self.patch_size),
            "plan": self.plan,
            "iteration": int(self.iteration),
            "extras": dict(self.extras),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "checkpoint") -> "InferenceBundle":
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise DataError(f"{source}: checkpoint lacks {', '.join(missing)}; expected a checkpoint written by 'rtseg train'")
        version = int(data.get("bundle_version", 1))
        if version > BUNDLE_VERSION:
            raise DataError(f"{source}: bundle format {version} is newer than this rtseg reads ({BUNDLE_VERSION}); upgrade rtseg")
        try:
            return cls(
                model_spec=dict(data["model_spec"]),
                class_names=tuple(str(n) for n in data["class_names"]),
                colors=tuple((int(c[0]), int(c[1]), int(c[2])) for c in data["colors"]),
                preprocessing=Preprocessing.from_dict(data["preprocessing"]),
                patch_size=tuple(int(p) for p in data["patch_size"]),  # type: ignore[arg-type]
                plan=data.get("plan"),
                iteration=int(data.get("iteration", 0)),
                extras=dict(data.get("extras") or {}),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(f"{source}: malformed inference metadata ({type(exc).__name__}: {exc})") from None

    def build(self, weights: Optional[dict[str, torch.Tensor]] = None, source: str = "checkpoint") -> nn.Module:
        """The network in eval mode, with ``weights`` loaded strictly when given."""
        try:
            model = build_model(self.model_spec)
            if weights is not None:
                model.load_state_dict(weights)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{source}: cannot rebuild the model from its checkpoint ({first})") from None
        return self.as_inference(model).eval()

    def as_inference(self, model: nn.Module) -> nn.Module:
        """``model`` as inference sees it: the one place the prior correction is applied (training's validation
        calls it too). The offset follows the model's device."""
        offset = self.logit_offset
        if offset is None:
            return model
        device = next(model.parameters()).device
        return LogitOffset(model, offset).to(device)


def save_bundle(path: str | os.PathLike[str], bundle: InferenceBundle, weights: dict[str, torch.Tensor],
                training_state: Optional[dict[str, Any]] = None) -> None:
    """Weights + bundle (+ the training state a resume needs), written atomically."""
    save_checkpoint({"model": weights, **bundle.to_dict(), **(training_state or {})}, path)


def rewrite_bundle(source: str | os.PathLike[str], out: str | os.PathLike[str],
                   change: Callable[[InferenceBundle], InferenceBundle]) -> Path:
    """``source`` re-saved to ``out`` with ``change(bundle)``: the same weights and training state, written
    by :func:`save_bundle` (the one checkpoint writer) atomically."""
    bundle, weights, payload = load_bundle(source)
    bundle_keys = set(bundle.to_dict()) | set(REQUIRED_KEYS) | {"model", "rtseg_format"}
    training_state = {k: v for k, v in payload.items() if k not in bundle_keys}
    save_bundle(out, change(bundle), weights, training_state)
    return Path(out)


def load_bundle(path: str | os.PathLike[str]) -> tuple[InferenceBundle, dict[str, torch.Tensor], dict[str, Any]]:
    """(bundle, weights, the whole payload) from an rtseg checkpoint, loaded with weights_only=True."""
    data = load_checkpoint(path)
    if not isinstance(data.get("model"), dict):
        raise DataError(f"{path}: checkpoint lacks model weights; expected a checkpoint written by 'rtseg train'")
    return InferenceBundle.from_dict(data, str(path)), data["model"], data
