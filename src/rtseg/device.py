"""Device choice and the GPU fast path (bf16 autocast, channels-last 3D)."""
from __future__ import annotations

import contextlib
import logging
from typing import ContextManager

import torch

from rtseg.errors import ConfigError

log = logging.getLogger("rtseg")


def select_device(want_cuda: bool, local_rank: int | None = None) -> torch.device:
    if want_cuda and torch.cuda.is_available():
        return torch.device("cuda", local_rank or 0)
    if want_cuda:
        log.info("CUDA requested but no GPU is available: running on CPU")
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


def autocast(device: torch.device, enabled: bool) -> ContextManager[object]:
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, channels_last: bool) -> torch.memory_format:
    return torch.channels_last_3d if device.type == "cuda" and channels_last else torch.contiguous_format


def gpu_memory_report(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    return f"GPU peak memory {peak:.2f} GiB of {total:.1f} GiB ({torch.cuda.get_device_name(device)})"
