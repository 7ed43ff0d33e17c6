"""torch.distributed under torchrun: rank bookkeeping, DDP wrapping, the few collectives the loop needs.

Every collective here must be reached by every rank in the same order, so each helper is a
no-op in one process and otherwise called unconditionally by the trainer (never under
``if rank == 0``).  Rank 0 is the reference: its weights are what DDP broadcasts at
construction, its buffers are what checkpoints hold and what every rank validates with.
"""
from __future__ import annotations

import logging
import os
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn

from rtseg.device import DistInfo, env_int as _env_int
from rtseg.errors import ConfigError

log = logging.getLogger("rtseg")
T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(parallel: bool, want_cuda: bool) -> DistInfo:
    """PARALLEL under torchrun -> DDP; PARALLEL without torchrun -> one process, with a message on how to launch.

    Launched by torchrun with several processes, DDP is used whatever PARALLEL says: N
    independent runs racing for the same GPU and run directory is never what was meant.
    """
    if not launched_by_torchrun():
        if parallel:
            # The original code base's configs say PARALLEL: True; they must keep working as they are.
            log.warning(
                "PARALLEL: true but not launched by torchrun: training in one process. For several GPUs or nodes "
                "launch with: torchrun --nproc_per_node=N -m rtseg train -c CFG (see docs/DISTRIBUTED.md)"
            )
        return DistInfo()
    world = _env_int("WORLD_SIZE")
    info = DistInfo(_env_int("RANK"), world, _env_int("LOCAL_RANK", 0))
    if not 0 <= info.rank < world:
        raise ConfigError(f"environment RANK={info.rank} outside 0..WORLD_SIZE-1 ({world - 1})")
    if world == 1 or dist.is_initialized():
        return info
    if not parallel:
        log.info(f"launched by torchrun with {world} processes: training with DDP although PARALLEL is false")
    use_nccl = want_cuda and torch.cuda.is_available()
    if use_nccl:
        n_gpu = torch.cuda.device_count()
        if info.local_rank >= n_gpu:
            raise ConfigError(
                f"LOCAL_RANK {info.local_rank} but only {n_gpu} GPU(s) visible on this node: "
                "--nproc_per_node must not exceed the GPUs per node"
            )
        torch.cuda.set_device(info.local_rank)
    try:
        if use_nccl:
            dist.init_process_group("nccl", device_id=torch.device("cuda", info.local_rank))
        else:
            dist.init_process_group("gloo")
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"torch.distributed could not start (rank {info.rank} of {world}): {first[:200]}") from None
    if not info.is_main:
        _quiet_non_main()
    return info


def _quiet_non_main() -> None:
    """Other ranks keep warnings and errors but not N copies of every progress line."""
    log.setLevel(logging.WARNING)
    os.environ["TQDM_DISABLE"] = "1"  # tqdm reads TQDM_* defaults from the environment (explicit args still win)


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device, sync_bn: bool) -> nn.Module:
    """DDP around ``model`` (which must already be on ``device``); SyncBatchNorm only where NCCL can run it."""
    if not info.enabled:
        if sync_bn:
            log.info("TRAINING.SYNC_BN ignored: one process (batch statistics are already those of the whole batch)")
        return model
    if sync_bn:
        if device.type == "cuda":
            # Converts in place below any torch.compile wrapper, keeping the parameter objects the optimizer holds.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.info("TRAINING.SYNC_BN ignored on CPU (gloo): SyncBatchNorm needs CUDA; each rank normalises its own batch")
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def broadcast_object(obj: T, info: DistInfo, src: int = 0) -> T:
    """Rank ``src``'s value of a picklable object on every rank (e.g. the run directory it chose)."""
    if not info.enabled:
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def sync_buffers(module: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step every rank
    holds statistics updated by its own batch; syncing before validation makes each rank
    evaluate exactly the model that rank 0 writes to the checkpoint.
    """
    if not info.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=src)


@torch.no_grad()
def broadcast_module(module: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Rank ``src``'s parameters and buffers everywhere: for modules trained outside DDP (the discriminator)."""
    if not info.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=src)


def average_gradients_on_step(optimizer: torch.optim.Optimizer, info: DistInfo) -> Any:
    """Average gradients across ranks just before each ``optimizer.step()``; returns the hook handle.

    For a model not wrapped in DDP (ARPM's discriminator, whose generator pass runs with frozen
    parameters and so cannot be a DDP module): identical start + averaged gradients keep every
    rank's copy identical.  Parameters are visited in the optimizer's fixed order, so all ranks
    issue the same collectives; a parameter without a gradient contributes zeros.
    """
    if not info.enabled:
        return None
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= info.world_size
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            if p.grad is not None:
                p.grad.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    return optimizer.register_step_pre_hook(hook)


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if it is true on any: decisions that end the loop (MAX_MINUTES) must be unanimous."""
    if not info.enabled:
        return flag
    t = torch.tensor(1 if flag else 0, dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def max_over_ranks(value: float, info: DistInfo, device: torch.device) -> float:
    """The largest value any rank holds, on every rank: budget decisions (stop, LR) must agree."""
    if not info.enabled:
        return value
    t = torch.tensor(value, dtype=torch.float64 if device.type != "mps" else torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In place; every rank must call it, also one with nothing to contribute (a zero tensor)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
