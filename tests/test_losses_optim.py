import math

import pytest
import torch
import torch.nn.functional as F

from rtseg.config.schema import LossConfig, OptimConfig, SchedulerConfig
from rtseg.errors import ConfigError
from rtseg.evaluation.confusion import ConfusionMatrix
from rtseg.training.losses import SegmentationLoss, cross_entropy3d, soft_dice_loss
from rtseg.training.optim import build_optimizer, build_scheduler, lr_factor_fn


def test_ce_matches_torch_with_ignore_index():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, 6)
    target = torch.randint(0, 4, (2, 6, 6, 6))
    target[0, 0] = 250
    ours = cross_entropy3d(logits, target)
    ref = F.cross_entropy(logits, target, ignore_index=250)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_soft_dice_matches_monai():
    from monai.losses import DiceLoss

    torch.manual_seed(1)
    logits = torch.randn(2, 4, 8, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8, 8))
    ref = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target[:, None])
    assert torch.allclose(soft_dice_loss(logits, target), ref, atol=1e-5)


def test_unknown_class_costs_nothing_on_background():
    """Predicting organ 2 on background voxels is free where organ 2 was not contoured."""
    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target[0, :2] = 1
    logits = torch.full((1, 3, 4, 4, 4), -10.0)
    logits[:, 1][target == 1] = 10.0
    logits[:, 2][target == 0] = 10.0  # says organ 2 wherever truth says background
    known_all = torch.tensor([[True, True, True]])
    known_partial = torch.tensor([[True, True, False]])
    for name in ("cross_entropy3d", "dice_ce"):
        loss = SegmentationLoss(LossConfig(name=name))
        assert loss(logits, target, known_all) > 1.0
        assert loss(logits, target, known_partial) < 1e-3


def test_poly_really_decays_and_warmup():
    f = lr_factor_fn(SchedulerConfig(name="poly_lr", max_iter=100, gamma=0.9))
    assert f(0) == 1.0 and math.isclose(f(50), 0.5**0.9) and f(100) == 0.0
    w = lr_factor_fn(SchedulerConfig(name="constant_lr", warmup_iters=10, warmup_factor=0.2))
    assert math.isclose(w(0), 0.2) and math.isclose(w(5), 0.6) and w(10) == 1.0
    ms = lr_factor_fn(SchedulerConfig(name="multi_step", milestones=[10, 20], gamma=0.1))
    assert ms(9) == 1.0 and math.isclose(ms(10), 0.1) and math.isclose(ms(25), 0.01)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], OptimConfig(name="sgd", lr=0.1))
    sch = build_scheduler(opt, SchedulerConfig(name="poly_lr", max_iter=10))
    for _ in range(5):
        opt.step()
        sch.step()
    assert math.isclose(opt.param_groups[0]["lr"], 0.1 * 0.5**0.9, rel_tol=1e-6)


def test_optimizer_and_scheduler_argument_errors():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ConfigError, match=r"TRAINING.OPTIM.learning_rate: unknown argument for optimizer 'adam'; allowed: lr"):
        build_optimizer(p, OptimConfig(name="adam", learning_rate=0.1))
    with pytest.raises(ConfigError, match=r"TRAINING.LR_SCHEDULER.maxiter: unknown argument for 'poly_lr'"):
        lr_factor_fn(SchedulerConfig(name="poly_lr", maxiter=5))
    with pytest.raises(ConfigError, match=r"TRAINING.LR_SCHEDULER.max_iter: required"):
        lr_factor_fn(SchedulerConfig(name="poly_lr"))


def test_confusion_metrics_match_direct_counts():
    torch.manual_seed(2)
    gt = torch.randint(0, 4, (10, 10, 10))
    pred = torch.where(torch.rand(10, 10, 10) < 0.8, gt, torch.randint(0, 4, (10, 10, 10)))
    gt[0, 0, :3] = 250
    cm = ConfusionMatrix(4)
    cm.update(pred[:5], gt[:5])
    cm.update(pred[5:], gt[5:])
    m = cm.compute(["bg", "a", "b", "c"])
    valid = gt != 250
    for c, name in enumerate(["bg", "a", "b", "c"]):
        a, b = (pred == c) & valid, (gt == c) & valid
        dice = 2 * (a & b).sum().item() / (a.sum().item() + b.sum().item())
        assert math.isclose(m["dice"][name], dice, rel_tol=1e-9)
    assert math.isclose(m["overall_acc"], ((pred == gt) & valid).sum().item() / valid.sum().item())
    assert math.isclose(m["mean_dice"], sum(m["dice"][n] for n in ["a", "b", "c"]) / 3)
