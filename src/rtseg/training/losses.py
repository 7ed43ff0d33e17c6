"""Segmentation losses with the original code base's ignore index and partial-label support.

Partially labelled cases (``known`` is False for a class) use the marginal
formulation: probabilities of unknown classes are merged into background,
because a voxel marked background there may belong to an uncontoured organ.
Dice terms skip unknown classes.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.labels import IGNORE_INDEX
from rtseg.config.names import LOSSES
from rtseg.config.schema import LossConfig
from rtseg.models.blocks import Logits


def _merged_log_probs(logits: torch.Tensor, known: Optional[torch.Tensor]) -> torch.Tensor:
    """log-softmax where background absorbs the probability of each case's unknown classes."""
    logp = F.log_softmax(logits.float(), dim=1)
    if known is None or bool(known.all()):
        return logp
    into_bg = ~known.to(logits.device)
    into_bg[:, 0] = True
    bg = torch.logsumexp(logp.masked_fill(~into_bg[:, :, None, None, None], float("-inf")), dim=1, keepdim=True)
    return torch.cat([bg, logp[:, 1:]], dim=1)


def cross_entropy3d(logits: torch.Tensor, target: torch.Tensor, known: Optional[torch.Tensor] = None, ignore_index: int = IGNORE_INDEX,
                    weight: Optional[torch.Tensor] = None, reduction: str = "mean", gamma: float = 0.0) -> torch.Tensor:
    logp = _merged_log_probs(logits, known)
    valid = target != ignore_index
    tgt = torch.where(valid, target, torch.zeros_like(target))
    nll = -logp.gather(1, tgt[:, None]).squeeze(1)
    if gamma > 0:  # focal
        nll = nll * (1 - torch.exp(-nll)).pow(gamma)
    w = valid.float()
    if weight is not None:
        w = w * weight.to(logits.device)[tgt]
    total = (nll * w).sum()
    if reduction == "sum":
        return total
    return total / w.sum().clamp_min(1e-8)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, known: Optional[torch.Tensor] = None, ignore_index: int = IGNORE_INDEX,
                   smooth: float = 1e-5, include_background: bool = False) -> torch.Tensor:
    """Batch soft Dice (sums over batch and space per class), 1 - mean over counted classes."""
    n = logits.shape[1]
    prob = torch.exp(_merged_log_probs(logits, known))
    valid = (target != ignore_index)[:, None].float()
    onehot = F.one_hot(torch.where(target == ignore_index, torch.zeros_like(target), target), n).permute(0, 4, 1, 2, 3).float()
    if known is not None:
        cmask = known.float()[:, :, None, None, None]
    else:
        cmask = torch.ones(logits.shape[0], n, 1, 1, 1, device=logits.device)
    weight = valid * cmask
    dims = (0, 2, 3, 4)
    inter = (prob * onehot * weight).sum(dims)
    denom = ((prob + onehot) * weight).sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)
    counted = cmask.reshape(cmask.shape[0], n).any(0)
    start = 0 if include_background else 1
    counted = counted[start:]
    d = dice[start:]
    if not bool(counted.any()):
        return logits.sum() * 0.0
    return 1.0 - d[counted].mean()


def _ce(loss: "SegmentationLoss", logits: torch.Tensor, target: torch.Tensor, known: Optional[torch.Tensor]) -> torch.Tensor:
    return cross_entropy3d(logits, target, known, loss.cfg.ignore_index, reduction=loss.cfg.reduction)


def _focal(loss: "SegmentationLoss", logits: torch.Tensor, target: torch.Tensor, known: Optional[torch.Tensor]) -> torch.Tensor:
    c = loss.cfg
    return cross_entropy3d(logits, target, known, c.ignore_index, loss.class_weights, c.reduction, gamma=c.focal_gamma)


def _dice(loss: "SegmentationLoss", logits: torch.Tensor, target: torch.Tensor, known: Optional[torch.Tensor]) -> torch.Tensor:
    return soft_dice_loss(logits, target, known, loss.cfg.ignore_index)


def _dice_ce(loss: "SegmentationLoss", logits: torch.Tensor, target: torch.Tensor, known: Optional[torch.Tensor]) -> torch.Tensor:
    c = loss.cfg
    weight = loss.class_weights if c.class_weighted else None
    ce = cross_entropy3d(logits, target, known, c.ignore_index, weight, c.reduction)
    return c.dice_weight * soft_dice_loss(logits, target, known, c.ignore_index) + c.ce_weight * ce


_LOSSES: dict[str, Callable[["SegmentationLoss", torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]] = {
    "cross_entropy3d": _ce, "focal": _focal, "dice": _dice, "dice_ce": _dice_ce, "dice_ce_weighted": _dice_ce,
}
if set(_LOSSES) != set(LOSSES):  # the config's table and these implementations must name the same losses
    raise ImportError(f"rtseg.config.names.LOSSES {sorted(LOSSES)} != implemented {sorted(_LOSSES)}")


class SegmentationLoss(nn.Module):
    """The loss TRAINING.LOSS_FUNC names; class-weighted losses need ``class_weights``."""

    def __init__(self, cfg: LossConfig, class_weights: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.class_weights: Optional[torch.Tensor]
        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.float())
        else:
            self.class_weights = None

    def forward(self, logits: Logits, target: torch.Tensor, known: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``logits`` may be deep supervision's list (full resolution first): the weighted sum over its scales."""
        if isinstance(logits, torch.Tensor):
            return _LOSSES[self.cfg.name](self, logits.float(), target, known)
        weights = deep_supervision_weights(len(logits))
        terms = [w * _LOSSES[self.cfg.name](self, out.float(), scale_target(target, out.shape[2:]), known)
                 for w, out in zip(weights, logits)]
        return torch.stack(terms).sum()


def deep_supervision_weights(n_scales: int) -> list[float]:
    """nnU-Net's weights for outputs at scales 1, 1/2, 1/4, ...: 1, 1/2, 1/4, ... normalised to sum 1."""
    raw = [0.5**i for i in range(n_scales)]
    return [w / sum(raw) for w in raw]


def scale_target(target: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Labels (N, D, H, W) at a lower scale by nearest neighbour ('nearest-exact', as nnU-Net v2 downsamples
    segmentations for deep supervision); the ignore index survives as it is a label value."""
    if tuple(target.shape[1:]) == tuple(size):
        return target
    small = F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest-exact")
    return small[:, 0].to(target.dtype)


def frequency_weights(voxel_counts: torch.Tensor) -> torch.Tensor:
    """Inverse square-root frequency weights normalised to mean 1 (small organs weigh more)."""
    freq = voxel_counts.double() / voxel_counts.sum().clamp_min(1)
    w = 1.0 / torch.sqrt(freq.clamp_min(1e-6))
    return (w / w.mean()).float()
