"""rtseg vs nnU-Net v2 on the same OpenKBP cases, the same wall-clock training budget and the same metrics.

nnU-Net side (its own CLI, from its own Python: ``--nnunet-python``, default
``.venv-nnunet/bin/python`` made by ``make nnunet-venv``): the split's cases as an nnU-Net raw
dataset (imagesTr/labelsTr with train + val cases, imagesTs = val cases, dataset.json),
``nnUNetv2_plan_and_preprocess -c 3d_fullres``, our split written as fold 0's
``splits_final.json``, ``nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainer_rtsegBudget``
(nnU-Net's trainer stopped by a wall-clock budget with its poly schedule re-aimed at it:
benchmarks/nnunet_budget_trainer.py) and ``nnUNetv2_predict`` on the val cases (final checkpoint).
rtseg side: ``rtseg train -c configs/openkbp.yml`` for the same budget
(``TRAINING.MAX_MINUTES``) on the same train cases and ``rtseg predict`` with ``last.pt``.
Both predictions are scored by ``rtseg.evaluation.surface.case_metrics`` on the same val
cases, organs not contoured in a case skipped (``train.json``; nnU-Net itself trains them as
background, having no notion of partial labels). Prints Dice and HD95 side by side.

    python benchmarks/vs_nnunet.py --smoke                     # CPU: 4 train + 2 val cases, 90 s each (< 15 min)
    python benchmarks/vs_nnunet.py --device cuda --seconds 210 # a GPU: the whole split
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_log import record  # noqa: E402

from rtseg.data.datasets import load_partial_labels  # noqa: E402
from rtseg.evaluation.report import summarize  # noqa: E402
from rtseg.evaluation.surface import case_metrics  # noqa: E402
from rtseg.io.nifti import read_nifti  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["background", "Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible"]
DATASET_ID, DATASET = 517, "Dataset517_OpenKBPrtseg"
TRAINER = "nnUNetTrainer_rtsegBudget"
ENTRY = {"nnUNetv2_plan_and_preprocess":
         "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:plan_and_preprocess_entry",
         "nnUNetv2_train": "nnunetv2.run.run_training:run_training_entry",
         "nnUNetv2_predict": "nnunetv2.inference.predict_from_raw_data:predict_entry_point"}


def log_run(what: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` (called ``what`` in messages) with its output appended to ``log``; wall seconds."""
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        raise SystemExit(f"vs_nnunet: {what} failed (exit {proc.returncode}): "
                         f"{tail[0] if tail else ''} (log {log})")
    return time.perf_counter() - t0


def nnunet_cli(py: str, name: str, args: list[str], log: Path, env: dict[str, str]) -> float:
    """nnU-Net's console script ``name`` run by ``py`` (also where its scripts are not on PATH: pip --target)."""
    mod, fn = ENTRY[name].split(":")
    cmd = [py, "-c", f"import sys; from {mod} import {fn} as f; sys.argv = {[name, *args]!r}; sys.exit(f())"]
    return log_run(name, cmd, log, env)


def link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def write_raw(data: Path, raw: Path, train: list[str], val: list[str]) -> Path:
    """nnU-Net's raw layout (links to the NIfTI files) and dataset.json; returns imagesTs (the val CTs)."""
    root = raw / DATASET
    for cid in train + val:
        link(data / f"{cid}_ct.nii.gz", root / "imagesTr" / f"{cid}_0000.nii.gz")
        link(data / f"{cid}_labels.nii.gz", root / "labelsTr" / f"{cid}.nii.gz")
    for cid in val:
        link(data / f"{cid}_ct.nii.gz", root / "imagesTs" / f"{cid}_0000.nii.gz")
        link(data / f"{cid}_ct.nii.gz", root / "rtseg_val" / f"{cid}_ct.nii.gz")
    meta = {"channel_names": {"0": "CT"}, "labels": {n: i for i, n in enumerate(CLASSES)},
            "numTraining": len(train) + len(val), "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root / "imagesTs"


def install_trainer(py: str) -> None:
    """Copy the budget trainer where nnU-Net looks trainers up by name (its documented extension point)."""
    where = subprocess.run([py, "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    dst = Path(where) / "training" / "nnUNetTrainer" / "variants" / "training_length" / f"{TRAINER}.py"
    shutil.copyfile(Path(__file__).with_name("nnunet_budget_trainer.py"), dst)


def run_nnunet(args: argparse.Namespace, work: Path, train: list[str], val: list[str]) -> tuple[Path, dict]:
    """Plan, preprocess, train (budget) and predict with nnU-Net; (prediction folder, seconds per stage)."""
    py, log = args.nnunet_python, work / "nnunet.log"
    env = dict(os.environ, nnUNet_raw=str(work / "nnUNet_raw"), nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"), RTSEG_NNUNET_SECONDS=str(args.seconds),
               RTSEG_NNUNET_SKIP_FINAL_VAL="1")
    if args.smoke:
        env.update(RTSEG_NNUNET_ITERS="2", RTSEG_NNUNET_VAL_ITERS="1", nnUNet_n_proc_DA="1")
    images_ts = write_raw(args.data, work / "nnUNet_raw", train, val)
    install_trainer(py)
    sec = {}
    plan = ["-d", str(DATASET_ID), "-c", "3d_fullres", "-np", str(args.processes), "--verify_dataset_integrity"]
    sec["plan_and_preprocess"] = nnunet_cli(py, "nnUNetv2_plan_and_preprocess", plan, log, env)
    splits = work / "nnUNet_preprocessed" / DATASET / "splits_final.json"
    splits.write_text(json.dumps([{"train": train, "val": val}], indent=1))
    train_args = [str(DATASET_ID), "3d_fullres", "0", "-tr", TRAINER, "-device", args.device]
    sec["train"] = nnunet_cli(py, "nnUNetv2_train", train_args, log, env)
    out = work / "pred_nnunet"
    pred = ["-i", str(images_ts), "-o", str(out), "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-tr", TRAINER,
            "-device", args.device, "-npp", "1", "-nps", "1"] + (["--disable_tta"] if args.smoke else [])
    sec["predict"] = nnunet_cli(py, "nnUNetv2_predict", pred, log, env)
    return out, sec


def run_rtseg(args: argparse.Namespace, work: Path, partial: Path) -> tuple[Path, dict]:
    """rtseg train for the same budget on the same cases (unless --rtseg-checkpoint), then predict the val cases."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    rtseg, log, sec = [sys.executable, "-m", "rtseg"], work / "rtseg.log", {}
    ckpt = args.rtseg_checkpoint
    if ckpt is None:
        sets = {"DATASET.PATH": args.data, "DATASET.SPLITS": work / "splits.json", "DATASET.PARTIAL_LABELS": partial,
                "TRAINING.MAX_MINUTES": args.seconds / 60.0, "CUDA": args.device != "cpu"}
        if args.smoke:
            sets.update({"MODEL.BASE_FILTERS": 8, "DATASET.PATCH_SIZE": "[64,64,64]", "TRAINING.WORKERS": 0,
                         "TRAINING.VAL_INTERVAL": 100000, "TRAINING.VAL_OVERLAP": 0.25, "TRAINING.PRINT_INTERVAL": 10})
        cmd = rtseg + ["train", "-c", str(REPO / "configs" / "openkbp.yml"), "--run-dir", str(work / "rtseg_run")]
        for item in [f"{k}={v}" for k, v in sets.items()] + args.rtseg_set:
            cmd += ["--set", item]
        sec["train"] = log_run("rtseg train", cmd, log, env)
        ckpt = work / "rtseg_run" / "checkpoints" / "last.pt"
    out = work / "pred_rtseg"
    val_cts = work / "nnUNet_raw" / DATASET / "rtseg_val"
    predict = ["predict", "--checkpoint", str(ckpt), "--input", str(val_cts), "--output", str(out), "--device", args.device]
    sec["predict"] = log_run("rtseg predict", rtseg + predict, log, env)
    return out, sec


def score(data: Path, val: list[str], partial: Path, preds: dict[str, tuple[Path, str]]) -> dict[str, dict]:
    """Per method: rtseg's per-organ summary over the val cases (same metrics, same organs)."""
    known = load_partial_labels(partial, val, CLASSES) if partial.is_file() else {}
    rows: dict[str, list] = {m: [] for m in preds}
    for cid in val:
        gt = read_nifti(data / f"{cid}_labels.nii.gz")
        for m, (folder, pattern) in preds.items():
            pred = read_nifti(folder / pattern.format(cid))
            if pred.shape != gt.shape or not np.allclose(pred.affine, gt.affine, atol=1e-3):
                raise SystemExit(f"vs_nnunet: {m} prediction of {cid} is not on the CT's grid "
                                 f"({pred.shape} vs {gt.shape})")
            present = set(known[cid]) if cid in known else None
            rows[m] += case_metrics(pred.array, gt.array, gt.spacing, CLASSES, classes_present=present, case_id=cid)
    return {m: summarize(r, 2.0, len(val)) for m, r in rows.items()}


def print_table(summary: dict[str, dict]) -> dict[str, float]:
    """Dice (mean) and HD95 (median, mm) per organ side by side; returns each method's mean organ Dice."""
    methods = list(summary)
    print(f"{'organ':<14}{'n':>4}" + "".join(f"{m + ' Dice':>14}" for m in methods)
          + "".join(f"{m + ' HD95':>14}" for m in methods))
    means: dict[str, list[float]] = {m: [] for m in methods}
    for organ in CLASSES[1:]:
        stats = [summary[m]["organs"].get(organ) for m in methods]
        if stats[0] is None:
            continue
        dice = [s["metrics"]["dice"]["mean"] for s in stats]
        hd = [s["metrics"]["hd95"]["median"] for s in stats]
        for m, d in zip(methods, dice):
            means[m].append(d or 0.0)
        fmt = lambda v: f"{v:14.3f}" if v is not None else f"{'-':>14}"  # noqa: E731
        print(f"{organ:<14}{stats[0]['n_cases']:>4}" + "".join(fmt(d) for d in dice) + "".join(fmt(h) for h in hd))
    mean = {m: float(np.mean(v)) if v else 0.0 for m, v in means.items()}
    print(f"{'mean':<14}{'':>4}" + "".join(f"{mean[m]:14.3f}" for m in methods))
    return mean


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "openkbp" / "train",
                    help="OpenKBP NIfTI folder (<id>_ct.nii.gz, <id>_labels.nii.gz, train.json)")
    ap.add_argument("--splits", type=Path, default=REPO / "configs" / "openkbp_splits.json", help="train/val split")
    ap.add_argument("--train", type=int, help="first N train cases (default all; --smoke 4)")
    ap.add_argument("--val", type=int, help="first M val cases (default all; --smoke 2)")
    ap.add_argument("--seconds", type=float, help="training budget of each method in s (default 210; --smoke 90)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda, for both methods")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "vs_nnunet", help="working folder (default runs/vs_nnunet)")
    ap.add_argument("--nnunet-python", default=str(REPO / ".venv-nnunet" / "bin" / "python"),
                    help="Python with nnunetv2 (default .venv-nnunet/bin/python, from make nnunet-venv)")
    ap.add_argument("--processes", type=int, default=min(8, os.cpu_count() or 1), help="nnU-Net preprocessing processes")
    ap.add_argument("--rtseg-checkpoint", type=Path, help="score this rtseg checkpoint instead of training one")
    ap.add_argument("--rtseg-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for rtseg train (repeatable), e.g. TRAINING.WORKERS=8")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run that proves the harness (< 15 min on 2 cores)")
    ap.add_argument("--figures", metavar="JSONL", help="append each figure as a JSON line to this file")
    args = ap.parse_args()
    small = {"train": 4, "val": 2, "seconds": 90.0} if args.smoke else {"train": None, "val": None, "seconds": 210.0}
    for k, v in small.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    found = shutil.which(args.nnunet_python)
    if found is None:
        raise SystemExit(f"vs_nnunet: --nnunet-python {args.nnunet_python}: not found (make nnunet-venv)")
    args.nnunet_python = found
    return args


def main() -> int:
    args = parse_args()
    t_all = time.perf_counter()
    table = json.loads(args.splits.read_text())
    train, val = table["train"][: args.train], table["val"][: args.val]
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    (args.work / "splits.json").write_text(json.dumps({"train": train, "val": val}, indent=1))
    partial = args.data / "train.json"
    print(f"{len(train)} train + {len(val)} val cases, {args.seconds:.0f} s of training each, device {args.device}")
    nn_pred, nn_sec = run_nnunet(args, args.work, train, val)
    rt_pred, rt_sec = run_rtseg(args, args.work, partial)
    summary = score(args.data, val, partial, {"rtseg": (rt_pred, "{}_pred.nii.gz"), "nnU-Net": (nn_pred, "{}.nii.gz")})
    details = {"seconds": {"rtseg": rt_sec, "nnU-Net": nn_sec}, **summary}
    (args.work / "summary.json").write_text(json.dumps(details, indent=1))
    mean = print_table(summary)
    for m, sec in (("rtseg", rt_sec), ("nnU-Net", nn_sec)):
        print(f"{m}: " + ", ".join(f"{k} {v:.0f} s" for k, v in sec.items()))
    seconds = time.perf_counter() - t_all
    extra = {"device": args.device, "cases": f"{len(train)} train / {len(val)} val", "budget_s": args.seconds}
    for m in mean:
        record(args.figures, f"vs_nnunet.{m}.mean_dice", mean[m], "Dice", seconds, **extra)
        for organ, s in summary[m]["organs"].items():
            record(args.figures, f"vs_nnunet.{m}.dice.{organ}", s["metrics"]["dice"]["mean"], "Dice", seconds, **extra)
    record(args.figures, "vs_nnunet.dice_difference", mean["rtseg"] - mean["nnU-Net"], "Dice", seconds,
           note="rtseg minus nnU-Net, mean organ Dice", **extra)
    print(f"wall clock {seconds / 60:.1f} min; details in {args.work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
