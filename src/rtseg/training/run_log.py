"""What a user reads about a run: train.log, TensorBoard scalars, the history and the curves plot.

Rank 0 writes; every other rank holds a silent ``RunLog`` so the trainer never asks who it is.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger("rtseg")


class RunLog:
    def __init__(self, run_dir: Path, main: bool) -> None:
        self.main = main
        self.handler: Optional[logging.Handler] = None
        self.writer: Any = None
        if main:
            self.handler = logging.FileHandler(run_dir / "train.log")
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            log.addHandler(self.handler)
            log.setLevel(logging.INFO)

    def open_tensorboard(self, run_dir: Path) -> None:
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def info(self, message: str) -> None:
        if self.main:
            log.info(message)

    def train(self, history: dict[str, list[Any]], iteration: int, total: int, loss: float, lr: float, s_per_it: float,
              extra: dict[str, float], extra_text: str) -> None:
        """One print interval: mean loss, LR, speed, and the adversarial term's fields (``adv/`` in TensorBoard)."""
        if not self.main:
            return
        history["train_loss"].append([iteration, loss])
        history["lr"].append([iteration, lr])
        msg = f"[iter {iteration}/{total}] loss {loss:.4f} lr {lr:.3g} ({s_per_it:.3f} s/it)"
        if extra_text:
            msg += f" | {extra_text}"
        log.info(msg)
        if self.writer is not None:
            for k, v in extra.items():
                self.writer.add_scalar(f"adv/{k}", v, iteration)
            self.writer.add_scalar("train/loss", loss, iteration)
            self.writer.add_scalar("train/lr", lr, iteration)

    def validation(self, history: dict[str, list[Any]], iteration: int, metrics: dict[str, Any]) -> None:
        if not self.main:
            return
        md = metrics["mean_dice"]
        history["val_mean_dice"].append([iteration, md])
        per = ", ".join(f"{n} {d:.3f}" for n, d in list(metrics["dice"].items())[1:])
        log.info(f"[val {iteration}] mean Dice {md:.4f} | overall acc {metrics['overall_acc']:.4f} | mean acc "
                 f"{metrics['mean_acc']:.4f} | FreqW IoU {metrics['freqw_iou']:.4f} | {per}")
        if self.writer is not None:
            for k in ("overall_acc", "mean_acc", "freqw_iou", "mean_dice"):
                self.writer.add_scalar(f"val/{k}", metrics[k], iteration)
            for n, d in metrics["dice"].items():
                self.writer.add_scalar(f"val_dice/{n}", d, iteration)

    def close(self, history: Optional[dict[str, list[Any]]] = None, curves: Optional[Path] = None) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.main and history is not None and curves is not None:
            from rtseg.figures.curves import plot_training_curves

            plot_training_curves({k: [tuple(v) for v in vals] for k, vals in history.items() if vals}, curves)
        if self.handler is not None:
            log.removeHandler(self.handler)
            self.handler.close()
            self.handler = None


def improved(metric: float, best: float) -> bool:
    return not math.isnan(metric) and metric > best
