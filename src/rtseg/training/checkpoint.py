"""What a checkpoint holds: weights and training state, plus everything inference needs (nnU-Net style)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from rtseg.data.preprocess import Preprocessing
from rtseg.inference.bundle import InferenceBundle
from rtseg.io.checkpoint import extract_state_dict, load_checkpoint, save_checkpoint

log = logging.getLogger("rtseg")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP/DataParallel/torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def inference_metadata(
    model_spec: dict[str, Any],
    class_names: list[str],
    colors: list[tuple[int, int, int]],
    preprocessing: dict[str, Any],
    patch_size: tuple[int, int, int],
    plan: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """The checkpoint's inference contract (owned by ``rtseg.inference.bundle``)."""
    bundle = InferenceBundle(model_spec, tuple(class_names), tuple(colors), Preprocessing.from_dict(preprocessing),
                             tuple(patch_size), plan)
    meta = bundle.to_dict()
    del meta["iteration"]  # the training checkpoint records the iteration itself
    return meta


def write_training_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    iteration: int,
    config: dict[str, Any],
    meta: dict[str, Any],
    best_metric: float,
    history: dict[str, list[Any]],
    adversarial: Optional[dict[str, Any]] = None,
) -> Path:
    payload = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "iteration": int(iteration),
        "config": config,
        "best_metric": float(best_metric),
        "history": history,
        **meta,
    }
    if adversarial is not None:
        payload["adversarial"] = adversarial
    return save_checkpoint(payload, path)


def load_init_weights(model: nn.Module, path: str) -> list[str]:
    """Load matching weights (also from DataParallel 'module.' checkpoints); returns and logs skipped keys."""
    state = extract_state_dict(load_checkpoint(path, require_rtseg=False))
    own = unwrap(model).state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    missing = sorted(set(own) - set(usable))
    unwrap(model).load_state_dict(usable, strict=False)
    log.info(f"INIT_MODEL {path}: loaded {len(usable)} tensors, skipped {len(skipped)}, not initialised {len(missing)}")
    for k in skipped:
        log.info(f"  skipped key (absent from model or shape differs): {k}")
    return skipped
