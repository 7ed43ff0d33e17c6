"""Device choice, the GPU fast path (bf16 autocast, channels-last 3D) and the inference precision.

The fast path is what a GPU runs; ``RTSEG_FORCE_GPU_PATH=1`` (or ``force=True``) makes the
CPU take the same path (``torch.autocast("cpu", dtype=torch.bfloat16)``, channels-last 3D),
so CI without a GPU exercises the training step, validation and sliding window a GPU runs.
Every caller (trainer, validation, Predictor) goes through ``autocast`` and ``memory_format``.

Inference precision (``resolve_precision``): ``auto`` runs the network in bf16 where the hardware
computes bf16 natively (a GPU; a CPU with AVX512-BF16 or AMX, read from ``/proc/cpuinfo``), else fp32;
``bf16`` and ``fp32`` force one. On the CPU bf16 is ~2x faster for the 3D U-Nets and changes labels
on well under 0.1 % of voxels (benchmarks/bf16_agreement.py, docs/PERFORMANCE.md).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
import functools
import logging
import os
from pathlib import Path
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


PRECISIONS = ("auto", "bf16", "fp32")
"""Values of ``--precision`` (rtseg predict, val, test) and of the node's ``precision`` key."""

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of x86 CPUs that compute bf16 natively (oneDNN's bf16 convolutions run there)."""

CPU_BF16_ENV = "RTSEG_CPU_BF16"
"""``1``/``0`` overrides what ``cpu_has_native_bf16`` reads from the CPU (tests; a CPU the flags misreport)."""


@functools.lru_cache(maxsize=4)
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The native-bf16 instruction sets the CPU reports (``CPU_BF16_FLAGS`` found in ``cpuinfo``); ``()`` if
    none or the file is unreadable (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return tuple(f for f in CPU_BF16_FLAGS if f in flags)
    return ()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively: its flags say AVX512-BF16 or AMX and torch's
    kernels use AVX-512 (``torch.backends.cpu.get_cpu_capability()``); ``RTSEG_CPU_BF16`` overrides."""
    env = os.environ.get(CPU_BF16_ENV, "").strip()
    if env in ("0", "1"):
        return env == "1"
    return bool(cpu_bf16_flags()) and torch.backends.cpu.get_cpu_capability().startswith(("AVX512", "AMX"))


def resolve_precision(device: torch.device, precision: str = "auto", amp: bool = True,
                      force: Optional[bool] = None) -> torch.dtype:
    """The dtype the network computes in at inference: ``torch.bfloat16`` or ``torch.float32``.

    ``fp32``/``bf16`` are taken as asked; ``auto`` is bf16 on the GPU fast path (``amp`` on) and on a CPU with
    native bf16, fp32 elsewhere (and when ``amp`` is off: TRAINING.AMP false keeps a checkpoint in fp32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else torch.float32
    if not amp:
        return torch.float32
    if gpu_path(device, force) or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return torch.float32


def bf16_weights(device: torch.device, dtype: torch.dtype, force: Optional[bool] = None) -> bool:
    """Whether inference in ``dtype`` casts the network's weights to bf16 once (a CPU off the GPU fast path:
    no per-call weight casts, activations stay bf16) rather than running fp32 weights under ``autocast``."""
    return dtype == torch.bfloat16 and not gpu_path(device, force)


def inference_autocast(device: torch.device, dtype: torch.dtype, force: Optional[bool] = None) -> ContextManager[object]:
    """bf16 autocast for a bf16 run on the GPU fast path; a no-op elsewhere (fp32, or weights already bf16)."""
    return autocast(device, dtype == torch.bfloat16, force)


def precision_name(dtype: torch.dtype) -> str:
    """``bf16`` or ``fp32``: for logs and benchmark records."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


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


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc <malloc.h> mallopt parameters


def retain_freed_memory() -> bool:
    """Keep memory the process frees for its next allocations instead of handing it back to the OS.

    Why: a 3D window's tensors (tens to hundreds of MB) are above glibc's largest mmap threshold (32 MB),
    so each one is a fresh ``mmap`` whose pages fault in on first touch and are unmapped on free; on the
    project's 2-core VM that was ~30 % of a bf16 network window and ~20 % of a whole ``rtseg predict``
    (docs/PERFORMANCE.md). With mmap off and trimming off, the next window reuses pages already touched.
    The cost: the process keeps its peak memory until it exits (a node reuses it for the next series).
    glibc only (elsewhere nothing is changed); ``RTSEG_RETAIN_MEMORY=0`` leaves malloc as it is.
    Returns whether the setting was applied.
    """
    if os.environ.get("RTSEG_RETAIN_MEMORY", "1") == "0":
        return False
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))

