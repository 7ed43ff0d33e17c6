"""The seed's optimizers and LR schedulers (stepped every iteration), with warm-up and a poly decay that decays."""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from rtseg.config.schema import OptimConfig, SchedulerConfig
from rtseg.errors import ConfigError

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "asgd": torch.optim.ASGD,
    "adamax": torch.optim.Adamax,
    "adadelta": torch.optim.Adadelta,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}

# scheduler -> (allowed arguments with defaults; ``None`` = required)
SCHEDULER_ARGS: dict[str, dict[str, Any]] = {
    "constant_lr": {},
    "poly_lr": {"max_iter": None, "decay_iter": 1, "gamma": 0.9},
    "multi_step": {"milestones": None, "gamma": 0.1},
    "cosine_annealing": {"T_max": None, "eta_min": 0.0},
    "exp_lr": {"gamma": None},
}


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig, key: str = "TRAINING.OPTIM") -> torch.optim.Optimizer:
    cls = OPTIMIZERS[cfg.name]
    kwargs = cfg.kwargs()
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
    for k in kwargs:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}: unknown argument for optimizer {cfg.name!r}; allowed: {', '.join(allowed)}")
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: invalid arguments for {cfg.name!r}: {exc}") from None


def lr_factor_fn(cfg: SchedulerConfig, base_lr: float = 1.0, key: str = "TRAINING.LR_SCHEDULER") -> Callable[[int], float]:
    """Multiplicative LR factor as a function of the iteration (0-based), warm-up included."""
    spec = SCHEDULER_ARGS[cfg.name]
    kwargs = cfg.kwargs()
    for k in kwargs:
        if k not in spec:
            allowed = ", ".join(list(spec) + ["warmup_iters", "warmup_mode", "warmup_factor"])
            raise ConfigError(f"{key}.{k}: unknown argument for {cfg.name!r}; allowed: {allowed}")
    args = {**{k: v for k, v in spec.items() if v is not None}, **kwargs}
    for k, v in spec.items():
        if v is None and k not in args:
            raise ConfigError(f"{key}.{k}: required for {cfg.name!r}")

    def num(name: str, positive: bool = True) -> float:
        v = args[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and v <= 0):
            raise ConfigError(f"{key}.{name}: expected a positive number, got {v!r}")
        return float(v)

    name = cfg.name
    if name == "constant_lr":
        base: Callable[[int], float] = lambda it: 1.0
    elif name == "poly_lr":
        max_iter, gamma, step = num("max_iter"), num("gamma"), max(1, int(num("decay_iter")))
        base = lambda it: max(0.0, 1.0 - (it - it % step) / max_iter) ** gamma
    elif name == "multi_step":
        ms = args["milestones"]
        if not isinstance(ms, list) or not all(isinstance(m, int) for m in ms):
            raise ConfigError(f"{key}.milestones: expected a list of iterations, got {ms!r}")
        g = num("gamma")
        mss = sorted(ms)
        base = lambda it: g ** sum(it >= m for m in mss)
    elif name == "cosine_annealing":
        t_max, eta = num("T_max"), float(args["eta_min"]) / base_lr  # eta_min is an absolute LR, as in torch
        base = lambda it: eta + (1 - eta) * (1 + math.cos(math.pi * min(it, t_max) / t_max)) / 2
    else:
        g = num("gamma")
        base = lambda it: g**it

    w_iters, w_mode, w_factor = cfg.warmup_iters, cfg.warmup_mode, cfg.warmup_factor

    def factor(it: int) -> float:
        f = base(it)
        if it < w_iters:
            f *= w_factor if w_mode == "constant" else w_factor + (1 - w_factor) * it / w_iters
        return f

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig) -> LambdaLR:
    return LambdaLR(optimizer, lr_factor_fn(cfg, float(optimizer.param_groups[0]["lr"])))
