"""A model as data: name + arguments (saved in checkpoints so inference needs no training code)."""
from __future__ import annotations

from typing import Any

import torch.nn as nn

from rtseg.models.registry import create_model


def model_spec(name: str, in_channels: int, n_classes: int, base_filters: int, dropout: float, mrf: bool = False,
               deep_supervision: bool = False) -> dict[str, Any]:
    """``deep_supervision`` is written only when on, so specs (and checkpoints) without it read as before."""
    kwargs: dict[str, Any] = {"in_channels": in_channels, "n_classes": n_classes, "base_filters": base_filters, "dropout": dropout}
    if deep_supervision:
        kwargs["deep_supervision"] = True
    return {"name": name, "kwargs": kwargs, "mrf": bool(mrf)}


def build_model(spec: dict[str, Any]) -> nn.Module:
    model = create_model(spec["name"], **spec["kwargs"])
    if spec.get("mrf") and not hasattr(model, "mrf"):  # ARPM_net already ends in an MRF
        from rtseg.models.mrf import with_mrf

        model = with_mrf(model, spec["kwargs"]["n_classes"], iterations=int(spec.get("mrf_iterations", 5)))
    return model


def model_stride(model: nn.Module) -> int:
    """Total downsampling factor; patch sizes should be multiples of it."""
    inner = getattr(model, "backbone", model)
    return int(getattr(inner, "stride", 16))
