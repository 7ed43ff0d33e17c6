"""The one optimizer factory (segmenter and discriminator) and the LR schedules (stepped every iteration).

Names and scheduler arguments come from ``rtseg.config.names``, the table the schema validates
against; this module implements exactly those names (checked at import).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterable, Optional

import torch
from torch.optim.lr_scheduler import LambdaLR

from rtseg.config.names import FROM_ITER_MAX, OPTIMIZERS, SCHEDULERS
from rtseg.config.schema import OptimConfig, SchedulerConfig
from rtseg.errors import ConfigError

Schedule = Callable[[int], float]


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    return getattr(torch.optim, OPTIMIZERS[name])  # type: ignore[no-any-return]


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig, key: str = "TRAINING.OPTIM",
                    defaults: Optional[dict[str, Any]] = None) -> torch.optim.Optimizer:
    """``cfg.name`` with its arguments over ``defaults``; unknown arguments name ``key``."""
    cls = optimizer_class(cfg.name)
    kwargs = {**(defaults or {}), **cfg.kwargs()}
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
    for k in kwargs:
        if k not in allowed:
            raise ConfigError(f"{key}.{k}: unknown argument for optimizer {cfg.name!r}; allowed: {', '.join(allowed)}")
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: invalid arguments for {cfg.name!r}: {exc}") from None


def _resolved_args(cfg: SchedulerConfig, key: str, iter_max: Optional[int]) -> dict[str, Any]:
    arguments = SCHEDULERS[cfg.name]
    kwargs = cfg.kwargs()
    for k in kwargs:
        if k not in arguments:
            allowed = ", ".join(list(arguments) + ["warmup_iters", "warmup_mode", "warmup_factor"])
            raise ConfigError(f"{key}.{k}: unknown argument for {cfg.name!r}; allowed: {allowed}")
    defaults = {k: (iter_max if v == FROM_ITER_MAX else v) for k, v in arguments.items()}
    args = {**{k: v for k, v in defaults.items() if v is not None}, **kwargs}
    for k in arguments:
        if k not in args:
            raise ConfigError(f"{key}.{k}: required for {cfg.name!r}")
    return args


class _Args:
    """Scheduler arguments with type checks that name the key."""

    def __init__(self, args: dict[str, Any], key: str) -> None:
        self.args, self.key = args, key

    def num(self, name: str) -> float:
        v = self.args[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{self.key}.{name}: expected a positive number, got {v!r}")
        return float(v)

    def milestones(self) -> list[int]:
        ms = self.args["milestones"]
        if not isinstance(ms, list) or not all(isinstance(m, int) for m in ms):
            raise ConfigError(f"{self.key}.milestones: expected a list of iterations, got {ms!r}")
        return sorted(ms)


def _constant(a: _Args, base_lr: float) -> Schedule:
    return lambda it: 1.0


def _poly(a: _Args, base_lr: float) -> Schedule:
    max_iter, gamma, step = a.num("max_iter"), a.num("gamma"), max(1, int(a.num("decay_iter")))
    return lambda it: max(0.0, 1.0 - (it - it % step) / max_iter) ** gamma


def _multi_step(a: _Args, base_lr: float) -> Schedule:
    milestones, gamma = a.milestones(), a.num("gamma")
    return lambda it: gamma ** sum(it >= m for m in milestones)


def _cosine(a: _Args, base_lr: float) -> Schedule:
    t_max, eta = a.num("T_max"), float(a.args["eta_min"]) / base_lr  # eta_min is an absolute LR, as in torch
    return lambda it: eta + (1 - eta) * (1 + math.cos(math.pi * min(it, t_max) / t_max)) / 2


def _exp(a: _Args, base_lr: float) -> Schedule:
    gamma = a.num("gamma")
    return lambda it: gamma**it


_SCHEDULES: dict[str, Callable[[_Args, float], Schedule]] = {
    "constant_lr": _constant, "poly_lr": _poly, "multi_step": _multi_step, "cosine_annealing": _cosine, "exp_lr": _exp,
}
if set(_SCHEDULES) != set(SCHEDULERS):  # the config's table and these implementations must name the same schedules
    raise ImportError(f"rtseg.config.names.SCHEDULERS {sorted(SCHEDULERS)} != implemented {sorted(_SCHEDULES)}")


def lr_factor_fn(cfg: SchedulerConfig, base_lr: float = 1.0, key: str = "TRAINING.LR_SCHEDULER",
                 iter_max: Optional[int] = None) -> Schedule:
    """Multiplicative LR factor as a function of the iteration (0-based), warm-up included.

    ``iter_max`` (TRAINING.ITER_MAX) is the default of arguments that default to the run's length
    (poly_lr's max_iter); an explicit value in the config wins.
    """
    base = _SCHEDULES[cfg.name](_Args(_resolved_args(cfg, key, iter_max), key), base_lr)
    w_iters, w_mode, w_factor = cfg.warmup_iters, cfg.warmup_mode, cfg.warmup_factor

    def factor(it: int) -> float:
        f = base(it)
        if it < w_iters:
            f *= w_factor if w_mode == "constant" else w_factor + (1 - w_factor) * it / w_iters
        return f

    return factor


class ScheduleClock:
    """The schedule's idea of progress: the iteration, or further on where a wall-clock budget runs ahead of it.

    With TRAINING.TIME_SCHEDULE a MAX_MINUTES run sets ``ahead`` to the elapsed fraction of its budget times
    ITER_MAX, so the LR anneals to its end value when the budget ends, however many iterations fitted.
    """

    def __init__(self) -> None:
        self.ahead = 0

    def __call__(self, it: int) -> int:
        return max(it, self.ahead)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, iter_max: Optional[int] = None,
                    clock: Optional[ScheduleClock] = None) -> LambdaLR:
    factor = lr_factor_fn(cfg, float(optimizer.param_groups[0]["lr"]), iter_max=iter_max)
    if clock is None:
        return LambdaLR(optimizer, factor)
    return LambdaLR(optimizer, lambda it: factor(clock(it)))
