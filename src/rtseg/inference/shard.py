"""Batch prediction over several processes: ``torchrun --nproc_per_node=N -m rtseg predict``.

Each rank takes every N-th case of the (sorted, identical on every rank) case list and writes that
case's files itself; at the end the ranks exchange their results over a gloo process group (works
with or without GPUs) and rank 0 alone writes the one summary.csv and batch index. Without
torchrun's environment (WORLD_SIZE unset or 1) everything here is a no-op.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch

from rtseg.device import DistInfo, env_int
from rtseg.errors import ConfigError

log = logging.getLogger("rtseg")
T = TypeVar("T")
#: A rank may contour its share for hours while the others wait at the final exchange.
GATHER_TIMEOUT = timedelta(hours=24)


class Shard(DistInfo):
    """This process's rank among ``world_size`` predict processes, and what it does with it."""

    @classmethod
    def from_env(cls) -> "Shard":
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK; joins the process group when there are several."""
        world = env_int("WORLD_SIZE", 1)
        if world <= 1:
            return cls()
        shard = cls(env_int("RANK", 0), world, env_int("LOCAL_RANK", 0))
        if not 0 <= shard.rank < world:
            raise ConfigError(f"RANK={shard.rank}: expected 0..{world - 1} for WORLD_SIZE={world}")
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)
        return shard

    def device(self, device: torch.device) -> torch.device:
        """A CUDA device without an index becomes this rank's local GPU (one GPU per rank)."""
        if not self.enabled or device.type != "cuda" or device.index is not None:
            return device
        n = torch.cuda.device_count()
        if self.local_rank >= n:
            raise ConfigError(f"rank {self.rank}: LOCAL_RANK {self.local_rank} but only {n} CUDA GPU(s): "
                              f"use --nproc_per_node <= {n} or --device cpu")
        return torch.device("cuda", self.local_rank)

    def take(self, items: Sequence[T]) -> list[T]:
        """This rank's share: every world_size-th item from its rank on."""
        return list(items[self.rank :: self.world_size])

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def in_case_order(parts: Sequence[Sequence[T]], names: Sequence[str], name_of: Optional[Callable[[T], str]] = None) -> list[T]:
    """The ranks' results merged back into the input's case order."""
    key = name_of or (lambda r: r.case)  # type: ignore[attr-defined]
    by_name = {key(r): r for part in parts for r in part}
    return [by_name[n] for n in names if n in by_name]
