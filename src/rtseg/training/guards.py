"""Non-finite guard: a NaN/inf loss or gradient never reaches the weights.

Checked after ``backward`` and before ``optimizer.step``, so the weights, the optimizer
moments and every checkpoint written so far stay as they were. ``TRAINING.NONFINITE: stop``
(default) raises ``TrainingDiverged`` naming the step and the batch's cases; ``skip`` drops
the update (BatchNorm statistics of the bad forward are put back too), counts it and goes on,
as nnU-Net's mixed-precision scaler does. Under DDP the decision is made by all ranks together
(the gradients are already averaged; a bad loss on one rank is reported by every rank).
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn as nn

from rtseg.errors import RtsegError
from rtseg.training.distributed import DistInfo, any_rank

log = logging.getLogger("rtseg")


class TrainingDiverged(RtsegError):
    """A training step produced a non-finite loss or gradient (stop mode)."""


class FiniteGuard:
    """One check per step: ``snapshot`` before the forward (skip mode), ``step_is_finite`` after backward."""

    def __init__(self, mode: str, dist_info: DistInfo, device: torch.device) -> None:
        self.skip = mode == "skip"
        self.dist_info = dist_info
        self.device = device
        self._buffers: list[torch.Tensor] = []

    def snapshot(self, model: nn.Module) -> None:
        """Keep the BatchNorm running statistics, which the forward of a bad batch would spoil."""
        if self.skip:
            self._buffers = [b.detach().clone() for b in model.buffers()]

    @torch.no_grad()
    def step_is_finite(self, loss: torch.Tensor, params: Sequence[torch.nn.Parameter], model: nn.Module) -> bool:
        """True if the loss and the gradients are finite; in skip mode, otherwise restore buffers and return False."""
        grads = [p.grad for p in params if p.grad is not None]
        finite = torch.isfinite(loss.detach().float())
        if grads:
            finite = finite & torch.isfinite(torch.nn.utils.get_total_norm(grads))
        bad = any_rank(not bool(finite), self.dist_info, self.device)  # one host sync per step
        if bad and self.skip:
            for b, saved in zip(model.buffers(), self._buffers):
                b.copy_(saved)
        return not bad

    def diverged(self, loss: torch.Tensor, step: int, case_ids: Sequence[str], last_saved: int | None,
                 run_dir: str) -> TrainingDiverged:
        """The one-line error for stop mode: which step, which cases, which checkpoint is intact."""
        value = float(loss.detach().float())
        what = f"loss {value}" if not torch.isfinite(torch.tensor(value)) else f"gradient (loss {value:.4g})"
        rank = f" on rank {self.dist_info.rank}" if self.dist_info.enabled else ""
        kept = (f"checkpoints/last.pt (iteration {last_saved}) is intact: fix the data and continue with --resume {run_dir}"
                if last_saved is not None else "no checkpoint was written yet")
        return TrainingDiverged(
            f"training iteration {step}: non-finite {what}{rank} on the batch of cases {', '.join(case_ids)}; stopped before "
            f"the update, {kept}; or set TRAINING.NONFINITE: skip to drop such steps"
        )
