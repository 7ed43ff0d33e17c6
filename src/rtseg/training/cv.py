"""``rtseg cv``: N-fold cross-validation of one config, its out-of-fold metrics, post-processing and ensemble.

Folds are ``rtseg train --fold K`` runs in ``CV_DIR/fold_K`` (``rtseg.data.folds``). They can be trained
here one after another (``run_folds``) or elsewhere (``fold_commands`` prints them for one machine,
torchrun and a SLURM array); ``gather`` then predicts each fold's held-out cases with that fold's best
checkpoint (``predict_and_score``), reports the CV metrics per organ, chooses the post-processing per
organ (``rtseg.inference.cv_postprocess``) and writes ``ensemble.json``, which ``rtseg predict`` and
``rtseg serve`` read.
"""
from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from rtseg import __version__
from rtseg.config import Config, load_config
from rtseg.data.datasets import list_cases, load_partial_labels
from rtseg.errors import DataError
from rtseg.evaluation.report import format_table, summarize, write_long_csv, write_summary_json
from rtseg.evaluation.surface import labels_present
from rtseg.inference.cv_postprocess import PostprocessScores, choice_report, choose_postprocessing
from rtseg.inference.ensemble import ENSEMBLE_NAME, write_ensemble
from rtseg.inference.evaluate_split import predict_and_score
from rtseg.inference.predictor import Predictor, load_model
from rtseg.io.jsonfile import write_json
from rtseg.training.checkpoint import BEST

log = logging.getLogger("rtseg")
CV_SUMMARY = "cv_summary.json"
CV_PER_CASE = "cv_per_case.csv"
POSTPROCESSING = "postprocessing.json"
TOLERANCE_MM = 2.0


def fold_dir(cv_dir: Path, fold: int) -> Path:
    return cv_dir / f"fold_{fold}"


def fold_overrides(fold: int, n_folds: int) -> list[str]:
    """The config overrides ``rtseg train --fold K --folds N`` adds."""
    return [f"DATASET.FOLD={fold}", f"DATASET.FOLDS={n_folds}"]


def fold_config(config: str, overrides: Sequence[str], fold: int, n_folds: int) -> Config:
    return load_config(config, [*overrides, *fold_overrides(fold, n_folds)])


def fold_commands(config: str, overrides: Sequence[str], n_folds: int, cv_dir: Path) -> dict[str, list[str]]:
    """Shell lines that train every fold: one machine (one after another), torchrun (NGPU per fold), a SLURM array."""
    sets = "".join(f" --set {shlex.quote(o)}" for o in overrides)
    cfg, out = shlex.quote(config), shlex.quote(str(cv_dir))

    def train(fold: str, run_dir: str) -> str:
        return f"train -c {cfg} --fold {fold} --folds {n_folds} --run-dir {run_dir}{sets}"

    task = "$SLURM_ARRAY_TASK_ID"
    array_job = "python -m rtseg " + train(task, f"{out}/fold_{task}")
    return {
        "plain": [f"rtseg {train(str(k), shlex.quote(str(fold_dir(cv_dir, k))))}" for k in range(n_folds)],
        "torchrun": [f"torchrun --nproc_per_node=NGPU -m rtseg {train(str(k), shlex.quote(str(fold_dir(cv_dir, k))))}"
                     f" --set PARALLEL=true" for k in range(n_folds)],
        "slurm": [f"sbatch --array=0-{n_folds - 1} --wrap {shlex.quote(array_job)}"],
        "gather": [f"rtseg cv -c {cfg} --folds {n_folds} --out {out}{sets}"],
    }


def run_folds(config: str, overrides: Sequence[str], n_folds: int, cv_dir: Path) -> list[dict[str, Any]]:
    """Train the folds one after another; a fold whose run finished (metrics.json, best.pt) is kept, not retrained."""
    from rtseg.training.trainer import fit

    summaries = []
    for k in range(n_folds):
        run = fold_dir(cv_dir, k)
        if (run / "metrics.json").is_file() and (run / "checkpoints" / BEST).is_file():
            log.info(f"fold {k}: already trained in {run} (remove that folder to train it again)")
            continue
        cfg = fold_config(config, overrides, k, n_folds)
        summaries.append(fit(cfg, f"fold_{k}", run_dir=run))
    return summaries


@dataclass
class CVResult:
    summary: dict[str, Any]  # rtseg evaluate's summary of the out-of-fold rows, plus per-fold mean Dice
    postprocessing: dict[str, Any]  # choice_report
    ensemble: Path


def _known_organs(cfg: Config, case_ids: list[str]) -> dict[str, set[int]]:
    dataset = cfg.DATASET
    if not dataset.PARTIAL_LABELS:
        return {}
    return {c: set(v) for c, v in load_partial_labels(dataset.PARTIAL_LABELS, case_ids, dataset.class_names()).items()}


def _score_fold(cfg: Config, checkpoint: Path, device: torch.device, overlap: float,
                post: PostprocessScores) -> tuple[list[dict[str, Any]], float]:
    """Out-of-fold rows of one fold (each with its "fold"), its mean Dice; variant Dice scores go into ``post``."""
    predictor = Predictor(load_model(checkpoint, device), device, overlap=overlap, amp=cfg.TRAINING.AMP)
    dataset = cfg.DATASET
    known: dict[str, set[int]] = {}

    def on_case(ref: Any, ct: Any, gt: Any, pred: Any) -> None:
        organs = known.get(ref.case_id)
        if dataset.ABSENT_IS_UNKNOWN:
            organs = (organs if organs is not None else set(range(dataset.N_CLASSES))) & labels_present(gt.array)
        post.add(pred.array, gt.array, organs)

    known.update(_known_organs(cfg, [r.case_id for r in list_cases(dataset, dataset.VAL_SPLIT)]))
    scores = predict_and_score(predictor, dataset, dataset.VAL_SPLIT, on_case=on_case)
    return [{**r, "fold": cfg.DATASET.FOLD} for r in scores.rows], float(scores.confusion["mean_dice"])  # type: ignore[arg-type]


def gather(config: str, overrides: Sequence[str], n_folds: int, cv_dir: Path, device: torch.device,
           overlap: float = 0.5) -> CVResult:
    """Out-of-fold predictions of every fold -> CV metrics, post-processing choice and ensemble.json in ``cv_dir``."""
    members = [fold_dir(cv_dir, k) / "checkpoints" / BEST for k in range(n_folds)]
    missing = [str(m) for m in members if not m.is_file()]
    if missing:
        raise DataError(f"{cv_dir}: fold checkpoint(s) missing: {', '.join(missing)}; train the folds first "
                        "(rtseg cv --run, or the commands rtseg cv --print lists)")
    names = fold_config(config, overrides, 0, n_folds).DATASET.class_names()
    post = PostprocessScores(names)
    rows: list[dict[str, Any]] = []
    fold_dice = []
    for k, checkpoint in enumerate(members):
        fold_rows, mean_dice = _score_fold(fold_config(config, overrides, k, n_folds), checkpoint, device, overlap, post)
        rows += fold_rows
        fold_dice.append(mean_dice)
        log.info(f"fold {k}: {len({r['case'] for r in fold_rows})} held-out cases, mean Dice {mean_dice:.4f}")
    summary = summarize(rows, TOLERANCE_MM)
    organ_dice = [o["metrics"]["dice"]["mean"] for o in summary["organs"].values() if o["metrics"]["dice"]["mean"] is not None]
    summary.update({"folds": n_folds, "fold_mean_dice": fold_dice,
                    "mean_dice": sum(organ_dice) / len(organ_dice) if organ_dice else None})
    cv_dir.mkdir(parents=True, exist_ok=True)
    write_summary_json(summary, cv_dir / CV_SUMMARY)
    write_long_csv(rows, cv_dir / CV_PER_CASE)
    chosen = choose_postprocessing(post)
    report = choice_report(post, chosen)
    write_json(report, cv_dir / POSTPROCESSING)
    ensemble = write_ensemble(cv_dir / ENSEMBLE_NAME, members, chosen, {
        "rtseg_version": __version__, "config": str(config), "overrides": list(overrides), "folds": n_folds,
        "cv_mean_dice": summary["mean_dice"]})
    return CVResult(summary, report, ensemble)


def format_cv_table(result: CVResult) -> str:
    """Per organ Dice and HD95 over the out-of-fold cases, then the mean organ Dice and each fold's."""
    lines = [format_table(result.summary, ("dice", "hd95"))]
    if result.summary["mean_dice"] is not None:
        lines.append(f"mean organ Dice (out-of-fold): {result.summary['mean_dice']:.4f}")
    lines.append("per-fold mean Dice: " + ", ".join(f"{d:.4f}" for d in result.summary["fold_mean_dice"]))
    return "\n".join(lines)


def default_cv_dir(cfg: Config, config: str) -> Path:
    """``TRAINING.RUNS_DIR/<config name>/cv``."""
    return Path(cfg.TRAINING.RUNS_DIR) / Path(config).name.removesuffix(".yml").removesuffix(".yaml") / "cv"
