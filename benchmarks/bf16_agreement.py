"""bf16 vs fp32 inference on the same CTs: labels must agree before bf16 is the CPU default.

Two parts, each one ``rtseg.inference.precision_check`` run (same checkpoint, fp32 then bf16):

* phantom: the synthetic 512x512x160 pelvic CT and set-weight ResUnet_3D of benchmarks/predict.py
  (also benchmarks/predict_dicom.py's), against the phantom's truth;
* OpenKBP (``--checkpoint``): the validation split of configs/openkbp_splits.json (or ``--cases``),
  CTs and labels from ``--data``, organs scored where train.json says they were contoured.

Passes (exit 0) when, per part, at least 99.9 % of voxels get the same label and the mean organ
Dice (vs the truth) moves by at most 0.005. Timings per precision are printed too (the network
part, this process, ``torch.get_num_threads()`` threads).

    PYTHONPATH=src python benchmarks/bf16_agreement.py                                  # phantom only
    PYTHONPATH=src python benchmarks/bf16_agreement.py --checkpoint runs/openkbp-cpu/checkpoints/best.pt \\
        --data ../shared/data/openkbp/train --overlap 0.25
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_log import record  # noqa: E402
from predict import NAMES, SPACING, build_checkpoint, make_ct  # noqa: E402

from rtseg.device import cpu_bf16_flags  # noqa: E402
from rtseg.inference.precision_check import CaseAgreement, compare_labels, summarize  # noqa: E402
from rtseg.inference.predictor import Predictor, load_model  # noqa: E402
from rtseg.io.nifti import read_nifti  # noqa: E402
from rtseg.io.volume import Volume, affine_from_spacing  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def both(loaded, vol: Volume, overlap: float, seconds: dict) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    out = []
    for precision in ("fp32", "bf16"):
        pred = Predictor(loaded, "cpu", overlap=overlap, precision=precision)
        t0 = time.perf_counter()
        out.append(pred.predict_labels(vol))
        seconds[precision] = seconds.get(precision, 0.0) + time.perf_counter() - t0
    return out[0], out[1]


def phantom(args: argparse.Namespace) -> tuple[list[CaseAgreement], dict]:
    seconds: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "bench.pt"
        build_checkpoint(ckpt, argparse.Namespace(base_filters=16, target_spacing=[1.96, 1.96, 2.5], roi=[128, 128, 64]))
        loaded = load_model(ckpt)
    ct, truth = make_ct(tuple(args.shape))
    a, b = both(loaded, Volume(ct, affine_from_spacing(SPACING)), 0.5, seconds)
    return [compare_labels("phantom", a, b, truth, list(range(1, len(NAMES))))], seconds


def openkbp(args: argparse.Namespace) -> tuple[list[CaseAgreement], dict]:
    data = Path(args.data)
    meta = json.loads((data / "train.json").read_text())
    names = {v: int(k) for k, v in meta["labels"].items()}
    organs = {c["id"]: [names[o] for o in c["organs"]] for c in meta["cases"]}
    cases = args.cases or json.loads(Path(args.splits).read_text())[args.split]
    cases = cases[: args.max_cases] if args.max_cases else cases
    loaded = load_model(args.checkpoint)
    rows, seconds = [], {}
    for case in cases:
        ct = read_nifti(data / f"{case}_ct.nii.gz")
        truth = read_nifti(data / f"{case}_labels.nii.gz").array
        a, b = both(loaded, ct, args.overlap, seconds)
        rows.append(compare_labels(case, a, b, truth, organs.get(case)))
    return rows, seconds


def report(part: str, rows: list[CaseAgreement], seconds: dict, args: argparse.Namespace, t0: float) -> bool:
    s = summarize(rows)
    text = ", ".join(f"{k} {v:.5f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items())
    print(f"{part}: {text}; network+way back fp32 {seconds['fp32']:.1f} s, bf16 {seconds['bf16']:.1f} s "
          f"({seconds['fp32'] / seconds['bf16']:.2f}x)")
    extra = {"part": part, "cases": len(rows), "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 2)}
    for k in ("equal_voxels", "mean_dice_fp32", "mean_dice_bf16", "mean_dice_shift", "min_dice_bf16_vs_fp32"):
        if k in s:
            record(args.figures, f"bf16_agreement.{part}.{k}", float(s[k]), "", time.perf_counter() - t0, **extra)
    for p in ("fp32", "bf16"):
        record(args.figures, f"bf16_agreement.{part}.seconds_{p}", seconds[p], "s", time.perf_counter() - t0, **extra)
    return bool(s["ok"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 160], help="phantom CT size (default 512 512 160)")
    ap.add_argument("--no-phantom", action="store_true", help="skip the phantom part")
    ap.add_argument("--checkpoint", help="an OpenKBP checkpoint (configs/openkbp_cpu.yml's recipe): runs the OpenKBP part")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "openkbp" / "train"),
                    help="OpenKBP NIfTI folder with train.json (default ../shared/data/openkbp/train)")
    ap.add_argument("--splits", default=str(REPO / "configs" / "openkbp_splits.json"), help="splits file")
    ap.add_argument("--split", default="val", help="split to use (default val)")
    ap.add_argument("--cases", nargs="+", help="these case ids instead of the split")
    ap.add_argument("--max-cases", type=int, help="only the first N cases of the split")
    ap.add_argument("--overlap", type=float, default=0.25, help="OpenKBP window overlap (default 0.25, as the recipe's val)")
    ap.add_argument("--figures", metavar="JSONL", help="append each figure as a JSON line to this file")
    args = ap.parse_args()
    print(f"CPU bf16 flags: {', '.join(cpu_bf16_flags()) or 'none'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    t0, ok = time.perf_counter(), True
    if not args.no_phantom:
        ok &= report("phantom", *phantom(args), args, t0)
    if args.checkpoint:
        ok &= report("openkbp", *openkbp(args), args, t0)
    print("agreement check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
