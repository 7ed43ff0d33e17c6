"""Validation on prepared (network-grid) cases: sliding window, argmax, confusion matrix on the device."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from rtseg.data.cases import PreparedCase
from rtseg.evaluation.confusion import ConfusionMatrix
from rtseg.inference.sliding_window import sliding_window_predict
from rtseg.device import autocast


@torch.no_grad()
def validate(
    model: nn.Module,
    cases: Sequence[PreparedCase],
    roi: tuple[int, int, int],
    n_classes: int,
    device: torch.device,
    overlap: float = 0.5,
    amp: bool = True,
    batch_size: int = 2,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> ConfusionMatrix:
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(n_classes, device)

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, amp):
            return model(x.contiguous(memory_format=memory_format)).float()

    try:
        for case in cases:
            img = torch.from_numpy(case.image)[None, None].to(device)
            logits = sliding_window_predict(run, img, roi, n_classes, overlap=overlap, batch_size=batch_size)
            pred = logits.argmax(1)[0]
            cm.update(pred, torch.from_numpy(case.label).to(device), torch.from_numpy(case.known).to(device))
    finally:
        model.train(was_training)
    return cm
