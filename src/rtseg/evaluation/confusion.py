"""Validation metrics from a confusion matrix accumulated on the device (the ones the original code base reported)."""
from __future__ import annotations

from typing import Optional

import torch

from rtseg.labels import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates an (n, n) matrix [truth, prediction] without host syncs; voxels with the ignore index are skipped."""

    def __init__(self, n_classes: int, device: torch.device | str = "cpu", ignore_index: int = IGNORE_INDEX) -> None:
        self.n = n_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor, known: Optional[torch.Tensor] = None) -> None:
        """``known``: bool (n_classes,) for partially labelled cases; predictions of unknown classes count as background."""
        pred = pred.reshape(-1).to(self.matrix.device)
        target = target.reshape(-1).to(self.matrix.device)
        if known is not None:
            known = known.to(self.matrix.device)
            pred = torch.where(known[pred.clamp_max(self.n - 1)], pred, torch.zeros_like(pred))
        valid = (target != self.ignore_index) & (target >= 0) & (target < self.n)
        idx = target[valid].long() * self.n + pred[valid].long()
        self.matrix += torch.bincount(idx, minlength=self.n * self.n).reshape(self.n, self.n)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix.to(self.matrix.device)

    def compute(self, class_names: list[str]) -> dict[str, object]:
        return confusion_metrics(self.matrix.double().cpu(), class_names)


def confusion_metrics(hist: torch.Tensor, class_names: list[str]) -> dict[str, object]:
    """Overall acc, mean class acc, frequency-weighted IoU, per-class Dice (= 2 IoU / (1 + IoU)), mean organ Dice.

    Classes absent from both truth and prediction get Dice NaN and are left out of the mean.
    ``mean_dice`` averages organs (classes 1..n-1): background Dice is near 1 and says nothing.
    """
    tp = torch.diag(hist)
    gt = hist.sum(1)
    pr = hist.sum(0)
    total = hist.sum()
    overall = float(tp.sum() / total) if total > 0 else float("nan")
    with torch.no_grad():
        acc_cls = tp / gt
        mean_acc = float(torch.nanmean(acc_cls)) if torch.any(gt > 0) else float("nan")
        union = gt + pr - tp
        iou = tp / union
        freq = gt / total if total > 0 else gt
        valid = union > 0
        freqw = float((freq[valid] * iou[valid]).sum())
        dice = 2 * tp / (gt + pr)
    per_class = {name: float(d) for name, d in zip(class_names, dice)}
    organ = dice[1:]
    mean_dice = float(torch.nanmean(organ)) if torch.any(~torch.isnan(organ)) else float("nan")
    return {
        "overall_acc": overall,
        "mean_acc": mean_acc,
        "freqw_iou": freqw,
        "mean_dice": mean_dice,
        "dice": per_class,
    }
