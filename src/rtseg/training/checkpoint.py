"""The training state and its checkpoint: saved and restored here only.

A checkpoint is the inference bundle (``rtseg.inference.bundle``: weights, architecture,
labels, preprocessing, patch size, plan) plus the ``TrainState`` a resume needs: optimizer,
scheduler, iteration, best metric, history, adversarial state and the RNG states, so a
resumed single-process run continues exactly as the uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from rtseg.config.loader import config_from_dict
from rtseg.config.schema import Config
from rtseg.data.preprocess import Preprocessing
from rtseg.errors import ConfigError, DataError
from rtseg.inference.bundle import InferenceBundle, save_bundle
from rtseg.io.checkpoint import extract_state_dict, load_checkpoint
from rtseg.training.adversarial import AdversarialTerm

log = logging.getLogger("rtseg")
LAST, BEST = "last.pt", "best.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP/DataParallel/torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def new_history() -> dict[str, list[Any]]:
    return {"train_loss": [], "val_mean_dice": [], "lr": []}


def rng_state() -> dict[str, Any]:
    """Every global RNG a training step may draw from (dropout: torch), in a weights_only-loadable form."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": list(random.getstate()[1]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate((3, tuple(int(v) for v in state["python"]), None))


@dataclass
class TrainState:
    """Everything that changes while training; ``model`` is the plain module (not DDP/compiled)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    adversary: AdversarialTerm
    iteration: int = 0
    best_metric: float = -math.inf
    history: dict[str, list[Any]] = field(default_factory=new_history)
    skipped_steps: int = 0

    def training_payload(self) -> dict[str, Any]:
        """The resume part of a checkpoint (the bundle holds the weights and the iteration)."""
        payload = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best_metric": float(self.best_metric),
            "history": self.history,
            "skipped_steps": int(self.skipped_steps),
            "rng": rng_state(),
        }
        adversarial = self.adversary.state_dict()
        if adversarial is not None:
            payload["adversarial"] = adversarial
        return payload

    def restore(self, payload: dict[str, Any], source: str, with_rng: bool = True) -> None:
        """Back to the state ``payload`` (a checkpoint) was saved in; ``with_rng`` False under DDP (ranks differ)."""
        try:
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.scheduler.load_state_dict(payload["scheduler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{source}: cannot resume from this checkpoint ({first})") from None
        self.adversary.load_state_dict(payload.get("adversarial"))
        self.iteration = int(payload["iteration"])
        self.best_metric = float(payload.get("best_metric", -math.inf))
        self.history = payload.get("history") or new_history()
        self.skipped_steps = int(payload.get("skipped_steps", 0))
        if with_rng and payload.get("rng"):
            set_rng_state(payload["rng"])


def save_training_checkpoint(path: Path, state: TrainState, bundle: InferenceBundle, config: dict[str, Any]) -> Path:
    """Weights + inference bundle + training state, written atomically (a reader never sees a partial file)."""
    stamped = dataclasses.replace(bundle, iteration=state.iteration)
    save_bundle(path, stamped, unwrap(state.model).state_dict(), {**state.training_payload(), "config": config})
    return path


def read_resume(run_dir: Path, cfg: Config) -> dict[str, Any]:
    """RUN_DIR/checkpoints/last.pt, checked against ``cfg`` (same model and classes) before any data is read."""
    last = run_dir / "checkpoints" / LAST
    if not last.is_file():
        raise DataError(f"--resume {run_dir}: no checkpoints/{LAST} in that run directory")
    payload = load_checkpoint(last)
    saved = config_from_dict(payload["config"], str(last))
    if saved.MODEL.model_dump() != cfg.MODEL.model_dump() or saved.DATASET.N_CLASSES != cfg.DATASET.N_CLASSES:
        raise ConfigError(f"--resume {run_dir}: MODEL/N_CLASSES differ from the run being resumed")
    return payload


def resume_grid(payload: dict[str, Any], source: str) -> tuple[Preprocessing, tuple[int, int, int], Optional[dict[str, Any]]]:
    """(preprocessing, patch size, plan) a resumed run keeps, so nothing drifts."""
    bundle = InferenceBundle.from_dict(payload, source)
    return bundle.preprocessing, bundle.patch_size, bundle.plan


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
