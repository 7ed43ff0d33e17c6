"""``rtseg demo``: synthetic pelvic CTs -> train ResUnet_3D -> evaluate -> figures and review pages, on any machine."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from rtseg.config import config_from_dict
from rtseg.labels import PELVIS_CLASS_NAMES, PELVIS_COLOR_MAP
from rtseg.data.datasets import CaseRef
from rtseg.io.jsonfile import write_json
from rtseg.io.naming import prediction_file
from rtseg.io.nifti import write_nifti
from rtseg.io.volume import Volume
from rtseg.inference.evaluate_split import predict_and_score
from rtseg.inference.predictor import Predictor, load_model
from rtseg.review.batch import BatchReview
from rtseg.device import select_device
from rtseg.training.trainer import fit

log = logging.getLogger("rtseg")

DEMO_SHAPE = (64, 64, 32)
DEMO_SPACING = (4.0, 4.0, 5.0)


def demo_config(data_dir: Path, runs_dir: Path, iterations: int, minutes: float, base_filters: int, cuda: bool) -> Any:
    return config_from_dict({
        "CUDA": cuda,
        "MODEL": {"NAME": "ResUnet_3D", "BASE_FILTERS": base_filters, "DROPOUT": 0.0},
        "DATASET": {
            "NAME": "nifti", "PATH": str(data_dir), "N_CLASSES": 6, "TEST_SPLIT": "test",
            "NORMALIZE": "ct_window", "HU_WINDOW": [-250.0, 350.0], "PATCH_SIZE": list(DEMO_SHAPE),
            "COLOR_MAP": [list(c) for c in PELVIS_COLOR_MAP], "CLASS_NAMES": list(PELVIS_CLASS_NAMES), "FG_OVERSAMPLE": 0.5,
        },
        "TRAINING": {
            "ITER_MAX": iterations, "BATCH_SIZE": 2, "WORKERS": 0, "VAL_INTERVAL": max(1, iterations // 4),
            "PRINT_INTERVAL": max(1, iterations // 20), "RUNS_DIR": str(runs_dir), "MAX_MINUTES": minutes,
            "OPTIM": {"name": "adamw", "lr": 0.003, "weight_decay": 1e-4},
            "LR_SCHEDULER": {"name": "poly_lr", "max_iter": iterations, "warmup_iters": min(20, iterations // 10)},
            "LOSS_FUNC": {"name": "dice_ce"},
        },
    }, "<demo>")


def seconds_per_iteration(base_filters: int, device: torch.device) -> float:
    """Time a few real training steps to size ITER_MAX to the time budget on this machine."""
    from rtseg.models import create_model

    model = create_model("ResUnet_3D", n_classes=6, base_filters=base_filters, dropout=0.0).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(2, 1, *DEMO_SHAPE, device=device)
    y = torch.randint(0, 6, (2, *DEMO_SHAPE), device=device)
    times = []
    for _ in range(4):
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))


def run_demo(out: Path, cases: int = 24, minutes: float = 3.5, seed: int = 0, base_filters: int = 8,
             cuda: Optional[bool] = None) -> dict[str, Any]:
    """The demo in ``out``; ``cuda`` None: the GPU if there is one (silently), False: the CPU, True: asked for."""
    from rtseg.figures import save_gif, save_montage
    from rtseg.synthetic import write_phantom_dataset

    t_start = time.monotonic()
    out = Path(out)
    if cases < 6:
        from rtseg.errors import ConfigError

        raise ConfigError(f"--cases {cases}: the demo needs at least 6 (train, validation and test patients)")
    n_test = max(2, cases // 6)
    n_val = max(1, cases // 12)
    n_train = cases - n_test - n_val
    data_dir = out / "data"
    log.info(f"generating {cases} synthetic pelvic CTs ({n_train} train, {n_val} val, {n_test} test) in {data_dir}")
    write_phantom_dataset(data_dir, layout="nifti", seed=seed, splits={"train": n_train, "val": n_val, "test": n_test},
                          shape=DEMO_SHAPE, spacing=DEMO_SPACING, overwrite=True, progress=True)
    device = select_device(cuda)
    # training gets what is left of the budget after data, calibration, evaluation and figures
    spent = (time.monotonic() - t_start) / 60
    eval_minutes = 0.35
    train_minutes = max(0.5, minutes - spent - eval_minutes)
    sec_it = seconds_per_iteration(base_filters, device)
    # the measured step excludes data loading and validation: keep 25% headroom
    iterations = int(max(20, min(3000, train_minutes * 60 / (sec_it * 1.25))))
    log.info(f"training ResUnet_3D (base filters {base_filters}) on {device}: ~{sec_it:.2f} s/iteration -> "
             f"{iterations} iterations in about {train_minutes:.1f} min")
    cfg = demo_config(data_dir, out / "runs", iterations, train_minutes, base_filters, device.type == "cuda")
    summary = fit(cfg, "demo", run_dir=out / "run")

    best = out / "run" / "checkpoints" / "best.pt"
    loaded = load_model(best, device)
    predictor = Predictor(loaded, device, overlap=0.25)
    names = list(loaded.bundle.class_names)
    colors = [tuple(c) for c in cfg.DATASET.colors()]
    pred_dir, fig_dir, review_dir = out / "predictions", out / "figures", out / "review"
    review_dir.mkdir(parents=True, exist_ok=True)
    review = BatchReview(loaded.bundle, html=True)

    def save_case(ref: CaseRef, ct: Volume, gt: Volume, pred: Volume) -> None:
        write_nifti(pred, pred_dir / prediction_file(ref.case_id), np.uint8)
        save_gif(ct.array, gt.array, pred.array, fig_dir / f"{ref.case_id}.gif", colors, axis=2, spacing=ct.spacing)
        save_montage(ct.array, gt.array, pred.array, fig_dir / f"{ref.case_id}_montage.png", colors, axis=2, spacing=ct.spacing)
        # the page's QA needs the probabilities: one more network run of this small case
        review.after(ref.case_id, ct, predictor.predict_full(ct), pred.array, review_dir, gt=gt.array)

    scores = predict_and_score(predictor, cfg.DATASET, cfg.DATASET.TEST_SPLIT, on_case=save_case)
    index = review.finish(review_dir, len(scores.cases))
    rows, seed_m, refs = scores.rows, scores.confusion, scores.cases
    organs = names[1:]
    table = {}
    for organ in organs:
        rs = [r for r in rows if r["organ"] == organ]
        table[organ] = {k: float(np.mean([r[k] for r in rs])) for k in ("dice", "hd95", "assd")}
    result = {
        "minutes_total": (time.monotonic() - t_start) / 60,
        "minutes_training": summary["seconds"] / 60,
        "iterations": summary["iterations"],
        "device": str(device),
        "test_cases": len(refs),
        "mean_dice": float(np.mean([table[o]["dice"] for o in organs])),
        "organs": table,
        "seed_metrics": seed_m,
        "run_dir": str(out / "run"),
        "review_index": str(index[0]) if index else None,
    }
    write_json(result, out / "metrics.json")
    curves = out / "run" / "training_curves.png"
    if curves.exists():
        (fig_dir / "training_curves.png").write_bytes(curves.read_bytes())
    return result


def format_demo_table(result: dict[str, Any]) -> str:
    lines = [f"{'organ':<22}{'Dice':>8}{'HD95 mm':>10}{'ASSD mm':>10}"]
    for organ, m in result["organs"].items():
        lines.append(f"{organ:<22}{m['dice']:>8.3f}{m['hd95']:>10.2f}{m['assd']:>10.2f}")
    lines.append(f"{'mean':<22}{result['mean_dice']:>8.3f}")
    lines.append(f"{result['test_cases']} test patients; {result['iterations']} iterations on {result['device']}; "
                 f"{result['minutes_training']:.1f} min training, {result['minutes_total']:.1f} min in all")
    return "\n".join(lines)
