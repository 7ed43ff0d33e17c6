"""The names a config may use for optimizers, LR schedules and losses: one table per kind.

These tables are the single source of valid names. The schema validates against them
(a wrong name lists the valid ones), and training builds from them
(``rtseg.training.optim``, ``rtseg.training.losses``, which check at import that they
implement exactly these names). They live here, torch-free, because ``config`` sits at
the bottom of the import graph and must not import ``training``. Model names come from
the models registry itself (``rtseg.models``, also at the bottom), imported lazily by the
schema, so a model registered by a plugin is valid without editing this file.
"""
from __future__ import annotations

from typing import Any, Mapping

# name -> torch.optim class name (resolved by rtseg.training.optim)
OPTIMIZERS: dict[str, str] = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "asgd": "ASGD",
    "adamax": "Adamax",
    "adadelta": "Adadelta",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
}

# Stands for "TRAINING.ITER_MAX" as a scheduler argument's default.
FROM_ITER_MAX = "TRAINING.ITER_MAX"

# scheduler -> allowed arguments with defaults (``None`` = required, FROM_ITER_MAX = the run's length)
SCHEDULERS: dict[str, dict[str, Any]] = {
    "constant_lr": {},
    "poly_lr": {"max_iter": FROM_ITER_MAX, "decay_iter": 1, "gamma": 0.9},
    "multi_step": {"milestones": None, "gamma": 0.1},
    "cosine_annealing": {"T_max": None, "eta_min": 0.0},
    "exp_lr": {"gamma": None},
}

# loss -> whether it uses inverse-frequency class weights counted on the training set
LOSSES: dict[str, bool] = {
    "cross_entropy3d": False,
    "dice": False,
    "dice_ce": False,
    "dice_ce_weighted": True,
    "focal": True,
}


def check_name(value: str, table: Mapping[str, Any] | list[str], what: str) -> str:
    """``value`` if it is a key of ``table``; else ValueError listing the valid names (pydantic names the key)."""
    if value not in table:
        raise ValueError(f"unknown {what} {value!r}; valid names: {', '.join(sorted(table))}")
    return value


def model_names() -> list[str]:
    """Registered model names (imports the torch-only models package on first use)."""
    from rtseg.models import list_models

    return list_models()
