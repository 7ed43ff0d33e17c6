"""The training entry point: ``fit(cfg)`` runs a ``Trainer`` (iteration-based, as in the seed).

``Trainer`` is one run: ``setup`` (every check that can reject the config first, then data,
then the restore of a resumed run), ``train_step``, ``validate``, ``save`` and ``finish``, over
one ``TrainState`` (``rtseg.training.checkpoint``). The adversarial term is a strategy
(``NoAdversary`` by default), so the loop is the same with and without MODEL.ADV.
"""
from __future__ import annotations

import logging
import random
import time
import warnings
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from rtseg.config.loader import config_to_yaml
from rtseg.config.schema import Config
from rtseg.data.augment import build_augmentation
from rtseg.data.plan import Plan, load_plan, plan_in
from rtseg.data.sampling import PatchDataset
from rtseg.device import autocast, gpu_memory_report, memory_format, select_device
from rtseg.errors import ConfigError, DataError
from rtseg.inference.bundle import InferenceBundle
from rtseg.io.atomic import atomic_path
from rtseg.io.jsonfile import write_json
from rtseg.models.blocks import first_logits
from rtseg.models.spec import build_model, model_spec, model_stride
from rtseg.review.training_stats import KEY as ORGAN_STATS, organ_measure, organ_stats
from rtseg.training.adversarial import build_adversary
from rtseg.training.checkpoint import (BEST, LAST, TrainState, load_init_weights, read_resume, resume_grid,
                                       save_training_checkpoint)
from rtseg.training.data_setup import TrainingData, check_patch, prepare_training_data
from rtseg.training.distributed import (DistInfo, all_reduce_sum, barrier, broadcast_object, init_distributed, max_over_ranks,
                                        shutdown, sync_buffers, wrap_ddp)
from rtseg.training.guards import FiniteGuard
from rtseg.training.losses import SegmentationLoss, frequency_weights
from rtseg.training.optim import ScheduleClock, build_optimizer, build_scheduler
from rtseg.training.run_log import RunLog, improved
from rtseg.training.validate import validate

log = logging.getLogger("rtseg")


def new_run_dir(cfg: Config, config_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return Path(cfg.TRAINING.RUNS_DIR) / config_name / stamp


class _Loader:
    """Infinite iteration over sample indices [start, stop) sharded across ranks.

    The DataLoader has its own generator, so iterating it draws nothing from the global torch
    RNG (the dropout masks' source): a resumed run draws exactly what the uninterrupted one did.
    """

    def __init__(self, dataset: PatchDataset, batch_size: int, workers: int, start_iter: int, dist_info: DistInfo, seed: int) -> None:
        per_step = batch_size * dist_info.world_size
        idx = range(start_iter * per_step + dist_info.rank * batch_size, len(dataset), per_step)
        batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in idx]
        self.loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, pin_memory=torch.cuda.is_available(),
                                 persistent_workers=False, prefetch_factor=4 if workers else None,
                                 generator=torch.Generator().manual_seed(seed))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.loader)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_network(cfg: Config) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The segmenter and its model spec (saved in checkpoints); bad model arguments are config errors."""
    model_cfg = cfg.MODEL
    spec = model_spec(model_cfg.NAME, model_cfg.CHANNEL_IN, cfg.DATASET.N_CLASSES, model_cfg.BASE_FILTERS,
                      model_cfg.DROPOUT, model_cfg.MRF, model_cfg.DEEP_SUPERVISION)
    try:
        return build_model(spec), spec
    except ValueError as exc:
        if model_cfg.DEEP_SUPERVISION and "deep_supervision" in str(exc):
            raise ConfigError(f"MODEL.DEEP_SUPERVISION: {model_cfg.NAME} has no deep supervision heads; use ResUnet_3D, "
                              "Deeper_ResUnet_3D or ARPM_net, or set it false") from None
        raise ConfigError(f"MODEL.NAME / arguments: {exc}") from None


class Trainer:
    """One training run of ``cfg`` in ``run_dir`` (rank 0's choice counts; created once the config is accepted),
    resumed from ``resume`` (a checkpoint payload) when given."""

    def __init__(self, cfg: Config, run_dir: Path, dist_info: DistInfo, resume: Optional[dict[str, Any]] = None,
                 plan: Optional[Plan] = None) -> None:
        self.cfg, self.run_dir, self.dist_info = cfg, run_dir, dist_info
        self.training_cfg = cfg.TRAINING
        self.resume, self.plan = resume, plan
        self.resumed_plan: Optional[dict[str, Any]] = None
        self.last_saved: Optional[int] = None  # the iteration of checkpoints/last.pt
        self.adv_stats: dict[str, float] = {}
        self.last_metrics: dict[str, Any] = {}

    # -- setup ------------------------------------------------------------------

    def setup(self) -> None:
        """Config checks and the state first; then data; then the restore, DDP and the sampler."""
        training_cfg = self.training_cfg
        seed_everything(training_cfg.SEED)
        self.device = select_device(self.cfg.cuda_request, self.dist_info.local_rank if self.dist_info.enabled else None)
        self.memory_format = memory_format(self.device, training_cfg.CHANNELS_LAST)
        model, self.model_spec = build_network(self.cfg)
        stride = model_stride(model)
        fixed = self._fixed_grid()
        early_patch = fixed[1] if fixed else self.cfg.DATASET.PATCH_SIZE or (self.plan.patch_size if self.plan else None)
        if early_patch is not None:
            check_patch(early_patch, stride, training_cfg.BATCH_SIZE, self.cfg.MODEL.NAME)
        optimizer = build_optimizer(model.parameters(), training_cfg.OPTIM)
        self.clock = ScheduleClock() if training_cfg.TIME_SCHEDULE and training_cfg.MAX_MINUTES else None
        scheduler = build_scheduler(optimizer, training_cfg.LR_SCHEDULER, training_cfg.ITER_MAX, self.clock)
        self.state = TrainState(model, optimizer, scheduler, build_adversary(self.cfg))
        # -- the config is accepted: the run directory, then data
        self.run_dir = _prepare_run_dir(self.cfg, self.run_dir, self.dist_info)
        self.run_log = RunLog(self.run_dir, self.dist_info.is_main)
        model.to(self.device).to(memory_format=self.memory_format)  # in place: the optimizer keeps the same parameters
        self.state.adversary.to(self.device)
        if self.resume is None and self.cfg.MODEL.INIT_MODEL:
            load_init_weights(model, self.cfg.MODEL.INIT_MODEL)
        self.data = self._prepare_data(stride, fixed)
        if self.resume is not None:
            self.restore(self.resume)
        self._setup_loop()

    def restore(self, payload: dict[str, Any]) -> None:
        """Continue where ``payload`` (last.pt) stopped; exactly so in one process (RNG states included)."""
        self.state.restore(payload, str(self.run_dir / "checkpoints" / LAST), with_rng=not self.dist_info.enabled)
        self.last_saved = self.state.iteration
        self.run_log.info(f"resuming at iteration {self.state.iteration}")

    def _fixed_grid(self) -> Optional[tuple[Any, tuple[int, int, int]]]:
        """A resumed run keeps its checkpoint's preprocessing, patch and plan; else the plan file, if any."""
        if self.resume is not None:
            pre, patch, plan = resume_grid(self.resume, str(self.run_dir / "checkpoints" / LAST))
            self.resumed_plan = plan  # may hold only the organ statistics (a run without DATASET.PLAN)
            self.plan = plan_in(plan, "checkpoint plan") or self.plan
            return pre, patch
        plan_key = self.cfg.DATASET.PLAN
        if self.plan is None and plan_key and plan_key != "auto":
            self.plan = load_plan(plan_key)
        return None

    def _prepare_data(self, stride: int, fixed: Optional[tuple[Any, tuple[int, int, int]]]) -> TrainingData:
        """One read of the training data: the plan (``auto``), the grid, the organ statistics and the cases;
        plan.json written once."""
        dataset_cfg = self.cfg.DATASET
        stats_known = self.resumed_plan is not None and ORGAN_STATS in self.resumed_plan
        measure = None if stats_known else partial(organ_measure, dataset_cfg.class_names(),
                                                   absent_is_unknown=dataset_cfg.ABSENT_IS_UNKNOWN)
        data = prepare_training_data(self.cfg, stride, self.plan, fixed=fixed, measure=measure)
        self.plan = data.plan
        if not data.val:
            raise DataError(f"DATASET.VAL_SPLIT {dataset_cfg.VAL_SPLIT!r}: no validation cases")
        check_patch(data.patch_size, stride, self.training_cfg.BATCH_SIZE, self.cfg.MODEL.NAME)  # a patch found in the data
        weights = frequency_weights(torch.from_numpy(data.class_voxels)) if self.training_cfg.LOSS_FUNC.class_weighted else None
        self.criterion = SegmentationLoss(self.training_cfg.LOSS_FUNC, weights).to(self.device)
        self.partial = any(not c.known.all() for c in data.train)
        plan = self.resumed_plan
        if not stats_known:  # a new run (or one resumed from a checkpoint without them)
            base = plan if plan is not None else (self.plan.to_dict() if self.plan else {})
            plan = {**base, ORGAN_STATS: organ_stats(data.survey, dataset_cfg.class_names())}
            self.run_log.info(f"organ statistics of {plan[ORGAN_STATS]['n_cases']} training case(s) recorded for contour QA")
            if self.dist_info.is_main:
                write_json(plan, self.run_dir / "plan.json")
        self.bundle = InferenceBundle(self.model_spec, tuple(dataset_cfg.class_names()), tuple(dataset_cfg.colors()),
                                      data.preprocessing, data.patch_size, plan)
        loss_cfg = self.training_cfg.LOSS_FUNC
        if weights is not None and loss_cfg.prior_correction:
            self.bundle = self.bundle.with_prior_correction(weights, loss_cfg.name)  # validation and inference undo it
        return data

    def _setup_loop(self) -> None:
        training_cfg, dist_info, model = self.training_cfg, self.dist_info, self.state.model
        net = torch.compile(model) if training_cfg.COMPILE else model
        self.net = wrap_ddp(net, dist_info, self.device, training_cfg.SYNC_BN)  # type: ignore[arg-type]
        if dist_info.enabled:
            torch.manual_seed(training_cfg.SEED + dist_info.rank)  # after DDP's broadcast: dropout masks differ per rank
        self.state.adversary.distribute(dist_info)
        self.params = list(model.parameters())
        self.guard = FiniteGuard(training_cfg.NONFINITE, dist_info, self.device)
        self.run_log.open_tensorboard(self.run_dir)
        dataset_cfg = self.cfg.DATASET
        length = training_cfg.ITER_MAX * training_cfg.BATCH_SIZE * dist_info.world_size
        augment = build_augmentation(dataset_cfg.AUGMENT_MIRROR) if dataset_cfg.AUGMENT else None
        dataset = PatchDataset(self.data.train, self.data.patch_size, dataset_cfg.FG_OVERSAMPLE, length=length,
                               seed=training_cfg.SEED, augment=augment, class_balanced=dataset_cfg.FG_SAMPLING == "class")
        self.loader = _Loader(dataset, training_cfg.BATCH_SIZE, training_cfg.WORKERS, self.state.iteration, dist_info,
                              training_cfg.SEED)
        self.config_dict = self.cfg.model_dump(mode="json")
        self.running = torch.zeros((), device=self.device)
        self.n_running = 0

    # -- the loop ---------------------------------------------------------------

    def train_step(self, batch: dict[str, Any]) -> None:
        """One update (or, on a non-finite loss/gradient, a stop before it or a counted skip)."""
        state, device = self.state, self.device
        x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=self.memory_format)
        y = batch["label"].to(device, non_blocking=True)
        known = batch["known"].to(device, non_blocking=True) if self.partial else None
        self.guard.snapshot(state.model)
        with autocast(device, self.training_cfg.AMP):
            outputs = self.net(x)  # a list under deep supervision: full resolution first
        logits = first_logits(outputs)
        loss = self.criterion(outputs, y, known) + state.adversary.generator_loss(x, logits, state.iteration, y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        finite = self.guard.step_is_finite(loss, self.params, state.model)
        if finite:
            state.optimizer.step()
            self.adv_stats = state.adversary.discriminator_step(x, logits.detach(), y, state.iteration)
            self.running += loss.detach()
            self.n_running += 1
        elif self.guard.skip:
            state.optimizer.zero_grad(set_to_none=True)
            state.skipped_steps += 1
            log.warning(f"iteration {state.iteration + 1}: non-finite loss or gradient on cases "
                        f"{', '.join(batch['case_id'])}: step skipped ({state.skipped_steps} so far)")
        else:
            raise self.guard.diverged(loss, state.iteration + 1, batch["case_id"], self.last_saved, str(self.run_dir))
        with warnings.catch_warnings():  # a skipped first step steps the schedule before the optimizer, on purpose
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler.step\(\)` before", UserWarning)
            state.scheduler.step()  # also on a skipped step: the LR stays a function of the iteration
        state.iteration += 1

    def report(self, t0: float, start: int) -> None:
        """Mean loss over the print interval (one collective), LR, speed, adversarial fields, skipped steps."""
        state = self.state
        mean_loss = float(all_reduce_sum(self.running, self.dist_info)) / (max(1, self.n_running) * self.dist_info.world_size)
        self.running.zero_()
        self.n_running = 0
        text = state.adversary.log_text(self.adv_stats)
        if state.skipped_steps:
            text = " | ".join(t for t in (text, f"{state.skipped_steps} non-finite steps skipped") if t)
        speed = (time.monotonic() - t0) / max(1, state.iteration - start)
        self.bar.set_postfix(loss=f"{mean_loss:.4f}")
        self.run_log.train(state.history, state.iteration, self.training_cfg.ITER_MAX, mean_loss,
                           state.optimizer.param_groups[0]["lr"], speed, self.adv_stats, text)

    def validate(self) -> None:
        """Every rank validates its share of the cases with rank 0's model; rank 0 keeps the best checkpoint."""
        dist_info, state, training_cfg = self.dist_info, self.state, self.training_cfg
        cases = self.data.val[dist_info.rank :: dist_info.world_size]  # may be empty: the all_reduce below still runs
        sync_buffers(state.model, dist_info)  # every rank validates rank 0's BatchNorm statistics (the checkpoint's)
        net = self.bundle.as_inference(state.model)
        cm = validate(net, cases, self.data.patch_size, self.cfg.DATASET.N_CLASSES, self.device,
                      training_cfg.VAL_OVERLAP, training_cfg.AMP, memory_format=self.memory_format)
        all_reduce_sum(cm.matrix, dist_info)
        metrics = cm.compute(self.cfg.DATASET.class_names())
        self.last_metrics = {"iteration": state.iteration, **metrics}
        if not dist_info.is_main:
            return
        self.run_log.validation(state.history, state.iteration, metrics)
        if improved(metrics["mean_dice"], state.best_metric):  # type: ignore[arg-type]
            state.best_metric = float(metrics["mean_dice"])  # type: ignore[arg-type]
            self.save(BEST)

    def save(self, name: str) -> None:
        """Rank 0 writes checkpoints/<name> atomically: a crash leaves the previous file whole."""
        if self.dist_info.is_main:
            save_training_checkpoint(self.run_dir / "checkpoints" / name, self.state, self.bundle, self.config_dict)
            if name == LAST:
                self.last_saved = self.state.iteration

    def run(self) -> dict[str, Any]:
        training_cfg, dist_info, total = self.training_cfg, self.dist_info, self.training_cfg.ITER_MAX
        deadline = time.monotonic() + training_cfg.MAX_MINUTES * 60 if training_cfg.MAX_MINUTES else None
        start = self.state.iteration
        t0 = time.monotonic()
        self.net.train()
        self.bar = tqdm(total=total, initial=start, desc="train", unit="it", disable=not dist_info.is_main, dynamic_ncols=True)
        stopped_early = False
        for batch in self.loader:
            self.train_step(batch)
            self.bar.update(1)
            it = self.state.iteration
            if it % training_cfg.PRINT_INTERVAL == 0 or it == total:
                self.report(t0, start)
            out_of_time = deadline is not None and self._budget_used(deadline) >= 1.0
            if it % training_cfg.VAL_INTERVAL == 0 or it == total or out_of_time:
                self.validate()
                self.save(LAST)
                barrier(dist_info)
            if out_of_time:
                stopped_early = it < total
                self.run_log.info(f"MAX_MINUTES reached: stopping at iteration {it}")
                break
            if it >= total:
                break
        self.bar.close()
        return self.finish(time.monotonic() - t0, stopped_early)

    def _budget_used(self, deadline: float) -> float:
        """Fraction of MAX_MINUTES spent, the same on every rank; moves the LR schedule's clock on (TIME_SCHEDULE)."""
        budget = self.training_cfg.MAX_MINUTES * 60  # type: ignore[operator]
        used = max_over_ranks(1.0 - (deadline - time.monotonic()) / budget, self.dist_info, self.device)
        if self.clock is not None:
            self.clock.ahead = int(used * self.training_cfg.ITER_MAX)
        return used

    def finish(self, seconds: float, stopped_early: bool) -> dict[str, Any]:
        """The summary (every rank), history.json, metrics.json, curves (rank 0)."""
        state = self.state
        best = broadcast_object(state.best_metric, self.dist_info)  # only rank 0 tracks the best checkpoint
        summary = {"run_dir": str(self.run_dir), "iterations": state.iteration, "best_mean_dice": best,
                   "final": self.last_metrics, "seconds": seconds, "stopped_early": stopped_early,
                   "skipped_steps": state.skipped_steps}
        if self.dist_info.is_main:
            write_json(state.history, self.run_dir / "history.json")
            write_json(summary, self.run_dir / "metrics.json")
            report = gpu_memory_report(self.device)
            if report:
                log.info(report)
            self.run_log.close(state.history, self.run_dir / "training_curves.png")
        return summary

    def close(self) -> None:
        if hasattr(self, "run_log"):
            self.run_log.close()


def _prepare_run_dir(cfg: Config, run_dir: Path, dist_info: DistInfo) -> Path:
    run_dir = Path(broadcast_object(str(run_dir), dist_info))  # all ranks use the run dir rank 0 chose
    if dist_info.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "checkpoints").glob(".*.tmp*"):  # half-written by a killed run (atomic_path's temp names)
            stale.unlink()
        with atomic_path(run_dir / "config.yaml") as tmp:
            tmp.write_text(config_to_yaml(cfg))
    barrier(dist_info)
    return run_dir


def fit(cfg: Config, config_name: str = "config", resume: Optional[str | Path] = None, run_dir: Optional[Path] = None,
        plan: Optional[Plan] = None) -> dict[str, Any]:
    """Train per ``cfg``; returns a summary with the run dir, best mean Dice and final metrics."""
    dist_info = init_distributed(cfg.PARALLEL, cfg.CUDA)
    trainer: Optional[Trainer] = None
    try:
        payload = read_resume(Path(resume), cfg) if resume is not None else None
        chosen = Path(resume) if resume is not None else run_dir or new_run_dir(cfg, config_name)
        trainer = Trainer(cfg, chosen, dist_info, payload, plan)
        trainer.setup()
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        shutdown(dist_info)
