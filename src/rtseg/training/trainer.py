"""The training entry point: load config, build, fit. Iteration-based, as in the seed."""
from __future__ import annotations

import logging
import math
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from rtseg.config.loader import config_from_dict, config_to_yaml
from rtseg.config.schema import Config
from rtseg.data.augment import build_augmentation
from rtseg.data.sampling import PatchDataset
from rtseg.errors import ConfigError, DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.checkpoint import load_checkpoint
from rtseg.io.jsonfile import write_json
from rtseg.models.spec import build_model, model_spec, model_stride
from rtseg.training.checkpoint import inference_metadata, load_init_weights, unwrap, write_training_checkpoint
from rtseg.data.plan import load_plan, save_plan
from rtseg.data.preprocess import Preprocessing
from rtseg.training.data_setup import plan_for, prepare_training_data
from rtseg.review.training_stats import plan_with_organ_stats
from rtseg.device import autocast, gpu_memory_report, memory_format, select_device
from rtseg.training.distributed import (DistInfo, all_reduce_sum, any_rank, average_gradients_on_step, barrier,
                                        broadcast_module, broadcast_object, init_distributed, shutdown, sync_buffers, wrap_ddp)
from rtseg.training.losses import SegmentationLoss, frequency_weights
from rtseg.training.optim import build_optimizer, build_scheduler
from rtseg.training.validate import validate

log = logging.getLogger("rtseg")


def new_run_dir(cfg: Config, config_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(cfg.TRAINING.RUNS_DIR) / config_name / stamp


def _setup_logging(run_dir: Path, main: bool) -> logging.Handler | None:
    if not main:
        return None
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


class _Loader:
    """Infinite iteration over sample indices [start, stop) sharded across ranks."""

    def __init__(self, dataset: PatchDataset, batch_size: int, workers: int, start_iter: int, dist_info: DistInfo, seed: int) -> None:
        per_step = batch_size * dist_info.world_size
        idx = range(start_iter * per_step + dist_info.rank * batch_size, len(dataset), per_step)
        batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in idx]
        self.loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                 persistent_workers=False, prefetch_factor=4 if workers else None)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.loader)


def fit(cfg: Config, config_name: str = "config", resume: Optional[str | Path] = None, run_dir: Optional[Path] = None,
        plan: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Train per ``cfg``; returns a summary with the run dir, best mean Dice and final metrics."""
    dcfg, mcfg = cfg.DATASET, cfg.MODEL
    dist_info = init_distributed(cfg.PARALLEL, cfg.CUDA)
    start_iter, resume_state = 0, None
    if resume is not None:
        run_dir = Path(resume)
        last = run_dir / "checkpoints" / "last.pt"
        if not last.is_file():
            raise DataError(f"--resume {run_dir}: no checkpoints/last.pt in that run directory")
        resume_state = load_checkpoint(last)
        saved = config_from_dict(resume_state["config"], str(last))
        if saved.MODEL.model_dump() != mcfg.model_dump() or saved.DATASET.N_CLASSES != dcfg.N_CLASSES:
            raise ConfigError(f"--resume {run_dir}: MODEL/N_CLASSES differ from the run being resumed")
        start_iter = int(resume_state["iteration"])
        plan = resume_state.get("plan") or plan
    if run_dir is None:
        run_dir = new_run_dir(cfg, config_name)
    run_dir = Path(broadcast_object(str(run_dir), dist_info))  # all ranks use the run dir rank 0 chose
    if dist_info.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(config_to_yaml(cfg))
    barrier(dist_info)
    handler = _setup_logging(run_dir, dist_info.is_main)
    try:
        return _fit(cfg, run_dir, dist_info, start_iter, resume_state, plan)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        shutdown(dist_info)


def _fit(cfg: Config, run_dir: Path, dist_info: DistInfo, start_iter: int, resume_state: Optional[dict[str, Any]],
         plan: Optional[dict[str, Any]]) -> dict[str, Any]:
    tcfg, dcfg, mcfg = cfg.TRAINING, cfg.DATASET, cfg.MODEL
    torch.manual_seed(tcfg.SEED)
    np.random.seed(tcfg.SEED)
    random.seed(tcfg.SEED)
    device = select_device(cfg.CUDA, dist_info.local_rank if dist_info.enabled else None)
    mfmt = memory_format(device, tcfg.CHANNELS_LAST)
    names, colors = dcfg.class_names(), dcfg.colors()
    spec = model_spec(mcfg.NAME, mcfg.CHANNEL_IN, dcfg.N_CLASSES, mcfg.BASE_FILTERS, mcfg.DROPOUT, mcfg.MRF)
    try:
        model = build_model(spec)
    except ValueError as exc:
        raise ConfigError(f"MODEL.NAME / arguments: {exc}") from None
    if mcfg.CHANNEL_IN != 1:
        raise ConfigError(f"MODEL.CHANNEL_IN: {mcfg.CHANNEL_IN} channels requested but datasets here hold one CT channel; use 1")
    # everything that can reject the config runs before any data is read
    optimizer = build_optimizer(model.parameters(), tcfg.OPTIM)
    scheduler = build_scheduler(optimizer, tcfg.LR_SCHEDULER)
    stride = model_stride(model)
    fixed = None
    if resume_state is not None:
        fixed = (Preprocessing.from_dict(resume_state["preprocessing"]), tuple(resume_state["patch_size"]))
    elif plan is None and dcfg.PLAN:
        if dcfg.PLAN == "auto":
            plan = plan_for(cfg, stride)
            if dist_info.is_main:
                save_plan(plan, run_dir / "plan.json")
        else:
            plan = load_plan(dcfg.PLAN)
    data = prepare_training_data(cfg, stride, plan, fixed=fixed)
    plan = plan_with_organ_stats(cfg, plan, run_dir / "plan.json" if dist_info.is_main else None)  # for contour QA
    if not data.val:
        raise DataError(f"DATASET.VAL_SPLIT {dcfg.VAL_SPLIT!r}: no validation cases")
    if tcfg.BATCH_SIZE * int(np.prod([p // stride for p in data.patch_size])) < 2:
        raise ConfigError(f"DATASET.PATCH_SIZE {list(data.patch_size)} with TRAINING.BATCH_SIZE {tcfg.BATCH_SIZE}: the {mcfg.NAME} "
                          f"bottleneck would hold one value per channel (BatchNorm needs more); use patches >= {2 * stride} "
                          "along one axis or a batch of 2")
    if resume_state is not None:
        unwrap(model).load_state_dict(resume_state["model"])
    elif mcfg.INIT_MODEL:
        load_init_weights(model, mcfg.INIT_MODEL)
    model.to(device).to(memory_format=mfmt)  # in place: the optimizer keeps the same parameters
    weights = frequency_weights(torch.from_numpy(data.class_voxels)) if tcfg.LOSS_FUNC.name in ("dice_ce_weighted", "focal") else None
    criterion = SegmentationLoss(tcfg.LOSS_FUNC, weights).to(device)
    adv = None
    if mcfg.ADV:
        from rtseg.models.discriminator import Discriminator3D
        from rtseg.training.adversarial import AdversarialStep

        disc = Discriminator3D(in_channels=dcfg.N_CLASSES, base_filters=cfg.ADVERSARIAL.D_BASE_FILTERS).to(device)
        adv = AdversarialStep(disc, cfg.ADVERSARIAL, dcfg.N_CLASSES, tcfg.LOSS_FUNC.ignore_index)
    history: dict[str, list[Any]] = {"train_loss": [], "val_mean_dice": [], "lr": []}
    best = -math.inf
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        history = resume_state.get("history", history)
        best = float(resume_state.get("best_metric", -math.inf))
        if adv is not None and resume_state.get("adversarial"):
            adv.load_state_dict(resume_state["adversarial"])
        log.info(f"resuming at iteration {start_iter}")
    if tcfg.COMPILE:
        model = torch.compile(model)  # type: ignore[assignment]
    ddp_model = wrap_ddp(model, dist_info, device, tcfg.SYNC_BN)
    if dist_info.enabled:
        torch.manual_seed(tcfg.SEED + dist_info.rank)  # after DDP's broadcast: dropout masks differ per rank
        if adv is not None:  # the discriminator trains outside DDP: same start, averaged gradients
            broadcast_module(adv.discriminator, dist_info)
            average_gradients_on_step(adv.optimizer, dist_info)
    meta = inference_metadata(spec, names, colors, data.preprocessing.to_dict(), data.patch_size, plan)
    cfg_dict = cfg.model_dump(mode="json")

    writer = None
    if dist_info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    total = tcfg.ITER_MAX
    dataset = PatchDataset(data.train, data.patch_size, dcfg.FG_OVERSAMPLE, length=total * tcfg.BATCH_SIZE * dist_info.world_size,
                           seed=tcfg.SEED, augment=build_augmentation(dcfg.AUGMENT_MIRROR) if dcfg.AUGMENT else None)
    loader = _Loader(dataset, tcfg.BATCH_SIZE, tcfg.WORKERS, start_iter, dist_info, tcfg.SEED)
    partial = any(not c.known.all() for c in data.train)
    if partial and adv is not None:
        raise ConfigError("MODEL.ADV with partial labels: the discriminator would learn that uncontoured organs look like "
                          "background in the 'real' inputs; train without ADV or with fully labelled cases")
    deadline = time.monotonic() + tcfg.MAX_MINUTES * 60 if tcfg.MAX_MINUTES else None
    running = torch.zeros((), device=device)
    n_running = 0
    last_metrics: dict[str, Any] = {}
    it = start_iter
    t0 = time.monotonic()
    ddp_model.train()
    bar = tqdm(total=total, initial=start_iter, desc="train", unit="it", disable=not dist_info.is_main, dynamic_ncols=True)

    def run_validation(iteration: int) -> None:
        nonlocal best, last_metrics
        cases = data.val[dist_info.rank :: dist_info.world_size]  # may be empty: the all_reduce below still runs
        sync_buffers(unwrap(ddp_model), dist_info)  # every rank validates rank 0's BatchNorm statistics (the checkpoint's)
        cm = validate(unwrap(ddp_model), cases, data.patch_size, dcfg.N_CLASSES, device, tcfg.VAL_OVERLAP, tcfg.AMP, memory_format=mfmt)
        all_reduce_sum(cm.matrix, dist_info)
        metrics = cm.compute(names)
        last_metrics = {"iteration": iteration, **metrics}
        if not dist_info.is_main:
            return
        md = metrics["mean_dice"]
        history["val_mean_dice"].append([iteration, md])
        per = ", ".join(f"{n} {d:.3f}" for n, d in list(metrics["dice"].items())[1:])  # type: ignore[union-attr]
        log.info(f"[val {iteration}] mean Dice {md:.4f} | overall acc {metrics['overall_acc']:.4f} | mean acc "
                 f"{metrics['mean_acc']:.4f} | FreqW IoU {metrics['freqw_iou']:.4f} | {per}")
        if writer is not None:
            for k in ("overall_acc", "mean_acc", "freqw_iou", "mean_dice"):
                writer.add_scalar(f"val/{k}", metrics[k], iteration)  # type: ignore[arg-type]
            for n, d in metrics["dice"].items():  # type: ignore[union-attr]
                writer.add_scalar(f"val_dice/{n}", d, iteration)
        if not math.isnan(md) and md > best:
            best = md
            write_training_checkpoint(run_dir / "checkpoints" / "best.pt", ddp_model, optimizer, scheduler, iteration, cfg_dict,
                                      meta, best, history, adv.state_dict() if adv else None)

    stopped_early = False
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=mfmt)
        y = batch["label"].to(device, non_blocking=True)
        known = batch["known"].to(device, non_blocking=True) if partial else None
        with autocast(device, tcfg.AMP):
            logits = ddp_model(x)
        loss = criterion(logits.float(), y, known)
        if adv is not None:
            loss = loss + adv.generator_loss(x, logits, it, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if adv is not None:
            d_stats = adv.discriminator_step(x, logits.detach(), y, it)
        running += loss.detach()
        n_running += 1
        it += 1
        bar.update(1)
        if it % tcfg.PRINT_INTERVAL == 0 or it == total:
            mean_loss = float(all_reduce_sum(running, dist_info)) / (n_running * dist_info.world_size)  # one sync per print
            running.zero_()
            n_running = 0
            lr = optimizer.param_groups[0]["lr"]
            if dist_info.is_main:
                history["train_loss"].append([it, mean_loss])
                history["lr"].append([it, lr])
                msg = f"[iter {it}/{total}] loss {mean_loss:.4f} lr {lr:.3g} ({(time.monotonic() - t0) / max(1, it - start_iter):.3f} s/it)"
                if adv is not None:
                    msg += f" | D loss {d_stats['d_loss']:.4f} D acc {d_stats['d_acc']:.2f}"
                    if writer is not None:
                        for k, v in d_stats.items():
                            writer.add_scalar(f"adv/{k}", v, it)
                bar.set_postfix(loss=f"{mean_loss:.4f}")
                log.info(msg)
                if writer is not None:
                    writer.add_scalar("train/loss", mean_loss, it)
                    writer.add_scalar("train/lr", lr, it)
        out_of_time = deadline is not None and any_rank(time.monotonic() > deadline, dist_info, device)  # unanimous stop
        if it % tcfg.VAL_INTERVAL == 0 or it == total or out_of_time:
            run_validation(it)
            if dist_info.is_main:
                write_training_checkpoint(run_dir / "checkpoints" / "last.pt", ddp_model, optimizer, scheduler, it, cfg_dict, meta,
                                          best, history, adv.state_dict() if adv else None)
            barrier(dist_info)
        if out_of_time:
            stopped_early = it < total
            if dist_info.is_main:
                log.info(f"MAX_MINUTES reached: stopping at iteration {it}")
            break
        if it >= total:
            break
    bar.close()
    best = broadcast_object(best, dist_info)  # only rank 0 tracks the best checkpoint
    summary = {"run_dir": str(run_dir), "iterations": it, "best_mean_dice": best, "final": last_metrics,
               "seconds": time.monotonic() - t0, "stopped_early": stopped_early}
    if dist_info.is_main:
        write_json(history, run_dir / "history.json")
        write_json(summary, run_dir / "metrics.json")
        report = gpu_memory_report(device)
        if report:
            log.info(report)
        if writer is not None:
            writer.close()
        _plot_curves(history, run_dir / "training_curves.png")
    return summary


def _plot_curves(history: dict[str, list[Any]], path: Path) -> None:
    from rtseg.figures.curves import plot_training_curves

    plot_training_curves({k: [tuple(v) for v in vals] for k, vals in history.items() if vals}, path)
