"""Device choice and the GPU fast path (bf16 autocast, channels-last 3D).

The fast path is what a GPU runs; ``RTSEG_FORCE_GPU_PATH=1`` (or ``force=True``) makes the
CPU take the same path (``torch.autocast("cpu", dtype=torch.bfloat16)``, channels-last 3D),
so CI without a GPU exercises the training step, validation and sliding window a GPU runs.
Every caller (trainer, validation, Predictor) goes through ``autocast`` and ``memory_format``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
import logging
import os
from typing import ContextManager, Optional, Union

import torch

from rtseg.errors import ConfigError

log = logging.getLogger("rtseg")


def select_device(want_cuda: Optional[bool], local_rank: int | None = None) -> torch.device:
    """The GPU when asked for (``True``) or not ruled out (``None``: the user said nothing) and present, else the CPU.
    Only an explicit request that cannot be met is said: "CUDA requested" when nobody asked would mislead."""
    if want_cuda is not False and torch.cuda.is_available():
        return torch.device("cuda", local_rank or 0)
    if want_cuda:
        log.warning("CUDA requested but no GPU is available: running on CPU")
    return torch.device("cpu")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA GPU is available (use --device cpu or auto)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r}: expected auto, cpu or cuda[:N]") from None


FORCE_GPU_PATH_ENV = "RTSEG_FORCE_GPU_PATH"


def gpu_path(device: torch.device, force: Optional[bool] = None) -> bool:
    """Whether ``device`` takes the GPU fast path: CUDA always; the CPU when forced (argument, else the env var)."""
    if device.type == "cuda":
        return True
    if force is None:
        force = os.environ.get(FORCE_GPU_PATH_ENV, "").strip().lower() in ("1", "true", "yes")
    return device.type == "cpu" and force


def autocast(device: torch.device, enabled: bool, force: Optional[bool] = None) -> ContextManager[object]:
    """bf16 autocast on the fast path when ``enabled`` (TRAINING.AMP / --amp), else a no-op context."""
    if enabled and gpu_path(device, force):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, channels_last: Union[bool, str], force: Optional[bool] = None) -> torch.memory_format:
    """channels-last 3D on the fast path when ``channels_last`` (TRAINING.CHANNELS_LAST) is true, on every device
    when it is ``"always"``; else contiguous."""
    if channels_last == "always":
        return torch.channels_last_3d
    return torch.channels_last_3d if channels_last is True and gpu_path(device, force) else torch.contiguous_format


def gpu_memory_report(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    return f"GPU peak memory {peak:.2f} GiB of {total:.1f} GiB ({torch.cuda.get_device_name(device)})"


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the processes torchrun started (training ranks, predict shards)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_int(name: str, default: Optional[int] = None) -> int:
    """An integer torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); ``default`` where it may be absent."""
    raw = os.environ.get(name)
    if raw is None:
        if default is None:
            raise ConfigError(f"environment variable {name} is not set; launch with torchrun")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected an integer (set by torchrun)") from None


def is_main_process() -> bool:
    """Rank 0, or not launched by torchrun at all: for printing results once (usable before/after fit)."""
    return os.environ.get("RANK", "0") == "0"
