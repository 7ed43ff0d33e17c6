"""nnU-Net's own trainer with a wall-clock budget, for benchmarks/vs_nnunet.py (runs in nnU-Net's Python).

nnU-Net finds trainers by class name inside its package, so vs_nnunet.py copies this file to
``nnunetv2/training/nnUNetTrainer/variants/training_length/`` (its documented extension
point). Everything is nnU-Net's: planning, data augmentation, loss with deep supervision,
SGD + poly schedule, its training loop. What changes: training stops at the first epoch
boundary from which another epoch would overrun ``RTSEG_NNUNET_SECONDS``; the poly
schedule's length is re-aimed after every epoch at the epochs that fit in the budget
(so the learning rate decays to ~0 by the end, as in a full run); and, optionally, the
epoch length (``RTSEG_NNUNET_ITERS``, ``RTSEG_NNUNET_VAL_ITERS``; nnU-Net's defaults 250
and 50) and the final validation (``RTSEG_NNUNET_SKIP_FINAL_VAL=1``: vs_nnunet.py predicts
the validation cases with nnUNetv2_predict anyway).
"""
from __future__ import annotations

import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class _BudgetReached(Exception):
    """Raised at an epoch boundary when the next epoch would not fit in the budget."""


class nnUNetTrainer_rtsegBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ["RTSEG_NNUNET_SECONDS"])
        self.num_iterations_per_epoch = int(os.environ.get("RTSEG_NNUNET_ITERS", self.num_iterations_per_epoch))
        self.num_val_iterations_per_epoch = int(os.environ.get("RTSEG_NNUNET_VAL_ITERS", self.num_val_iterations_per_epoch))
        self.num_epochs = 100000  # an upper bound; the budget ends training
        self._t0 = 0.0
        self._epoch_start = 0.0

    def on_train_start(self) -> None:
        super().on_train_start()
        self._t0 = time.monotonic()

    def on_epoch_start(self) -> None:
        self._epoch_start = time.monotonic()
        super().on_epoch_start()

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # increments current_epoch
        now = time.monotonic()
        last = now - self._epoch_start
        left = self.budget_s - (now - self._t0)
        planned = self.current_epoch + max(0, int(left // max(last, 1e-6)))
        self.lr_scheduler.max_steps = max(planned, self.current_epoch)
        if planned <= self.current_epoch:
            self.print_to_log_file(f"wall-clock budget {self.budget_s:.0f} s: stopping after {self.current_epoch} epoch(s), "
                                   f"{now - self._t0:.1f} s")
            raise _BudgetReached

    def run_training(self) -> None:
        try:
            super().run_training()
        except _BudgetReached:
            self.on_train_end()  # nnU-Net's own end: checkpoint_final.pth, data loaders shut down

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if os.environ.get("RTSEG_NNUNET_SKIP_FINAL_VAL", "") == "1":
            self.print_to_log_file("final validation skipped (RTSEG_NNUNET_SKIP_FINAL_VAL=1)")
            return
        super().perform_actual_validation(save_probabilities)
