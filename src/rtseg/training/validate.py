"""Validation on prepared (network-grid) cases: sliding window, argmax, confusion matrix on the device."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from rtseg.data.cases import PreparedCase
from rtseg.device import autocast
from rtseg.evaluation.confusion import ConfusionMatrix
from rtseg.inference.sliding_window import sliding_window_predict


@torch.no_grad()
def window_logits(model: nn.Module, image: np.ndarray, roi: tuple[int, int, int], n_classes: int, device: torch.device,
                  overlap: float = 0.5, amp: bool = True, batch_size: int = 2,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(1, C, D, H, W) float32 logits of ``model`` (in eval mode) over one volume, as the GPU path computes them."""

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, amp):
            return model(x.contiguous(memory_format=memory_format)).float()

    img = torch.from_numpy(image)[None, None].to(device)
    return sliding_window_predict(run, img, roi, n_classes, overlap=overlap, batch_size=batch_size)


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
    try:
        for case in cases:
            logits = window_logits(model, case.image, roi, n_classes, device, overlap, amp, batch_size, memory_format)
            pred = logits.argmax(1)[0]
            cm.update(pred, torch.from_numpy(case.label).to(device), torch.from_numpy(case.known).to(device))
    finally:
        model.train(was_training)
    return cm
