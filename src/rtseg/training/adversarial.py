"""ARPM-net's adversarial term: a discriminator judges CT x segmentation products.

The term is a strategy (``AdversarialTerm``) with a no-op default, ``NoAdversary``, so the
training loop is the same with and without MODEL.ADV. Per training iteration the loop does::

    seg_logits = model(x)
    loss = seg_loss + adv.generator_loss(x, seg_logits, iteration, y)
    loss.backward(); optimizer.step()
    stats = adv.discriminator_step(x, seg_logits.detach(), y, iteration)

Voxels labelled ``ignore_index`` count as background in the one-hot truth and
are zeroed in the CT product, for real and fake alike (otherwise the
discriminator could tell them apart by the masked region alone); pass ``y`` to
``generator_loss`` as well so the generator is judged on the same masked input.
Losses are computed in float32, so the step works under bf16 autocast.
"""
from __future__ import annotations

import copy
from typing import Any, Optional, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from rtseg.config.schema import AdversarialConfig, Config, OptimConfig
from rtseg.labels import IGNORE_INDEX
from rtseg.errors import DataError
from rtseg.models.discriminator import discriminator_input
from rtseg.training.distributed import DistInfo, average_gradients_on_step, broadcast_module
from rtseg.training.optim import build_optimizer

# The usual GAN settings where the optimizer has them (beta1 = 0.5; momentum for SGD).
D_OPTIM_DEFAULTS: dict[str, dict[str, Any]] = {"adam": {"betas": (0.5, 0.999)}, "sgd": {"momentum": 0.9}}


class AdversarialTerm(Protocol):
    """What the training loop asks of an adversarial term (see the module docstring for the order)."""

    def generator_loss(self, x: torch.Tensor, seg_logits: torch.Tensor, iteration: int,
                       y: Optional[torch.Tensor] = None) -> torch.Tensor: ...

    def discriminator_step(self, x: torch.Tensor, seg_logits: torch.Tensor, y: torch.Tensor,
                           iteration: int) -> dict[str, float]: ...

    def to(self, device: torch.device | str) -> "AdversarialTerm": ...

    def distribute(self, info: DistInfo) -> None: ...

    def state_dict(self) -> Optional[dict[str, Any]]: ...

    def load_state_dict(self, state: Optional[dict[str, Any]]) -> None: ...

    def log_text(self, stats: dict[str, float]) -> str: ...


class NoAdversary:
    """The default: no discriminator, no extra loss, nothing to save."""

    def generator_loss(self, x: torch.Tensor, seg_logits: torch.Tensor, iteration: int,
                       y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float32, device=seg_logits.device)

    def discriminator_step(self, x: torch.Tensor, seg_logits: torch.Tensor, y: torch.Tensor, iteration: int) -> dict[str, float]:
        return {}

    def to(self, device: torch.device | str) -> "NoAdversary":
        return self

    def distribute(self, info: DistInfo) -> None:
        return None

    def state_dict(self) -> Optional[dict[str, Any]]:
        return None

    def load_state_dict(self, state: Optional[dict[str, Any]]) -> None:
        return None  # a checkpoint of an ADV run resumed without ADV: the discriminator is dropped

    def log_text(self, stats: dict[str, float]) -> str:
        return ""


def build_adversary(cfg: Config) -> AdversarialTerm:
    """``AdversarialStep`` for MODEL.ADV (discriminator on the CPU; move it with ``.to``), else ``NoAdversary``."""
    if not cfg.MODEL.ADV:
        return NoAdversary()
    from rtseg.models.discriminator import Discriminator3D

    n_classes = cfg.DATASET.N_CLASSES
    disc = Discriminator3D(in_channels=n_classes, base_filters=cfg.ADVERSARIAL.D_BASE_FILTERS)
    return AdversarialStep(disc, cfg.ADVERSARIAL, n_classes, cfg.TRAINING.LOSS_FUNC.ignore_index)


class AdversarialStep:
    """Discriminator, its optimizer and the two adversarial losses (LSGAN or hinge)."""

    def __init__(self, discriminator: nn.Module, cfg: AdversarialConfig, n_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        self.discriminator = discriminator
        self.cfg = cfg
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self.optimizer = build_optimizer(discriminator.parameters(), OptimConfig(name=cfg.D_OPTIM, lr=cfg.D_LR),
                                         "ADVERSARIAL.D_OPTIM", D_OPTIM_DEFAULTS.get(cfg.D_OPTIM))
        # Above this score a sample counts as "real" (d_acc): midway between the LSGAN targets, or the hinge's 0.
        self._threshold = 0.5 if cfg.OBJECTIVE == "lsgan" else 0.0

    def to(self, device: torch.device | str) -> "AdversarialStep":
        self.discriminator.to(device)  # in place: the optimizer keeps the same parameters
        return self

    def distribute(self, info: DistInfo) -> None:
        """The discriminator trains outside DDP: same start on every rank, averaged gradients."""
        broadcast_module(self.discriminator, info)
        average_gradients_on_step(self.optimizer, info)

    def log_text(self, stats: dict[str, float]) -> str:
        return f"D loss {stats['d_loss']:.4f} D acc {stats['d_acc']:.2f}" if stats else ""

    # -- inputs -----------------------------------------------------------------

    def _valid_mask(self, y: torch.Tensor) -> torch.Tensor:
        return (y != self.ignore_index).unsqueeze(1)

    def _labels(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(N, D, H, W) or (N, 1, D, H, W) integer labels -> (N, D, H, W), checked against ``like``."""
        if y.dim() == 5 and y.shape[1] == 1:
            y = y[:, 0]
        if y.dim() != 4 or y.shape[0] != like.shape[0] or y.shape[1:] != like.shape[2:]:
            raise ValueError(f"labels of shape {tuple(y.shape)} do not match logits {tuple(like.shape)}")
        return y.long()

    def _fake_input(self, x: torch.Tensor, seg_logits: torch.Tensor, y: Optional[torch.Tensor]) -> torch.Tensor:
        probs = torch.softmax(seg_logits.float(), dim=1)
        ct = x.float()
        if y is not None:
            ct = ct[:, :1] * self._valid_mask(self._labels(y, seg_logits))
        return discriminator_input(ct, probs)

    def _real_input(self, x: torch.Tensor, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        labels = self._labels(y, like)
        valid = labels != self.ignore_index
        labels = torch.where(valid, labels, torch.zeros_like(labels))
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise DataError(
                f"adversarial step: labels range {int(labels.min())}..{int(labels.max())} outside "
                f"0..{self.n_classes - 1} (ignore index {self.ignore_index})"
            )
        onehot = F.one_hot(labels, self.n_classes).permute(0, 4, 1, 2, 3).float()
        return discriminator_input(x.float()[:, :1] * valid.unsqueeze(1), onehot)

    def _scores(self, d_in: torch.Tensor) -> torch.Tensor:
        return self.discriminator(d_in).float()

    # -- losses -----------------------------------------------------------------

    def generator_loss(
        self, x: torch.Tensor, seg_logits: torch.Tensor, iteration: int, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``LAMBDA`` x adversarial loss (float32 scalar); exactly 0 before ``WARMUP_ITERS`` or when LAMBDA is 0.

        Gradients reach ``seg_logits`` only: the discriminator's parameters are frozen during
        this forward, so the segmenter's backward leaves no gradients in D.
        """
        if iteration < self.cfg.WARMUP_ITERS or self.cfg.LAMBDA == 0.0:
            return torch.zeros((), dtype=torch.float32, device=seg_logits.device)
        params = list(self.discriminator.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(False)
        try:
            out = self._scores(self._fake_input(x, seg_logits, y))
        finally:
            for p, f in zip(params, flags):
                p.requires_grad_(f)
        if self.cfg.OBJECTIVE == "lsgan":
            loss = ((out - 1.0) ** 2).mean()
        else:
            loss = -out.mean()
        return self.cfg.LAMBDA * loss

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Loss on patch score maps; the real target is 1 - LABEL_SMOOTHING (one-sided: fakes keep 0 / -1)."""
        target = 1.0 - self.cfg.LABEL_SMOOTHING
        if self.cfg.OBJECTIVE == "lsgan":
            return 0.5 * (((real - target) ** 2).mean() + (fake**2).mean())
        return F.relu(target - real).mean() + F.relu(1.0 + fake).mean()

    def discriminator_step(self, x: torch.Tensor, seg_logits: torch.Tensor, y: torch.Tensor, iteration: int) -> dict[str, float]:
        """``D_STEPS`` discriminator updates on (real = CT x one-hot(y), fake = CT x softmax(seg_logits)).

        Trains from iteration 0 (``iteration`` is accepted for the loop's symmetry), so the
        discriminator is already informative when the generator term switches on after the
        warm-up.  Returns the last update's d_loss, d_acc (fraction of real and fake samples
        on the right side of the threshold, per-sample mean score), d_real and d_fake (mean scores).
        """
        seg_logits = seg_logits.detach()
        with torch.no_grad():
            real_in = self._real_input(x, y, seg_logits)
            fake_in = self._fake_input(x, seg_logits, y)
        self.discriminator.train()
        for _ in range(self.cfg.D_STEPS):
            self.optimizer.zero_grad(set_to_none=True)
            real = self._scores(real_in)
            fake = self._scores(fake_in)
            loss = self.discriminator_loss(real, fake)
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # frees the grads; the generator pass adds none
        with torch.no_grad():
            real_s = real.detach().flatten(1).mean(dim=1)
            fake_s = fake.detach().flatten(1).mean(dim=1)
            correct = (real_s > self._threshold).sum() + (fake_s <= self._threshold).sum()
            acc = correct.float() / (real_s.numel() + fake_s.numel())
        return {
            "d_loss": float(loss.detach()),
            "d_acc": float(acc),
            "d_real": float(real_s.mean()),
            "d_fake": float(fake_s.mean()),
        }

    # -- checkpointing ----------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Optional[dict[str, Any]]) -> None:
        """``None`` (a checkpoint written without ADV) keeps the fresh discriminator."""
        if state is None:
            return
        missing = [k for k in ("discriminator", "optimizer") if k not in state]
        if missing:
            raise DataError(f"checkpoint's adversarial state lacks {', '.join(missing)}; expected discriminator and optimizer")
        try:
            self.discriminator.load_state_dict(state["discriminator"])
            # Deep copy: torch keeps same-device moment tensors by reference, which would tie two steps together.
            self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"checkpoint's discriminator does not match ADVERSARIAL.D_BASE_FILTERS / DATASET.N_CLASSES: {first}"
            ) from None
