"""Benchmark: ``rtseg adapt``'s demons stage, settings against each other on SIMULATED OpenKBP fractions.

One elastix registration (rigid + B-spline, the shipped maps) per fraction, then ``adapt.demons.refine`` with each
setting; per setting the propagated contours' Dice per organ, the mean error from the simulator's true motion (mm),
the smallest Jacobian determinant and the seconds of the demons stage. Registration only (no networks). Choose on
**training** patients (the default): the validation patients are the done-when run's (benchmarks/adapt.py).

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/adapt_demons.py --skip 10 --patients 8 \\
        --iterations 100 50 30
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from rtseg.adapt.demons import DemonsOptions, refine
from rtseg.adapt.register import Registration, coords_jacobian, register, warp_probabilities
from rtseg.evaluation.surface import organ_metrics
from rtseg.io.nifti import read_nifti
from rtseg.synthetic.hn_fractions import simulate_hn_fraction_and_motion

ROOT = Path(__file__).resolve().parents[1]


def score(coords: np.ndarray, plan_labels: np.ndarray, truth: np.ndarray, motion: np.ndarray,
          spacing: np.ndarray, organs: list[int]) -> dict[int, tuple[float, float]]:
    """Per organ (Dice, mean error mm) of the plan warped by ``coords`` the way ``propagated`` warps it."""
    reg = Registration("deformable", coords.astype(np.float32), 0.0, {}, 0.0)
    pred = warp_probabilities(reg, plan_labels, int(plan_labels.max()) + 1, set(organs)).argmax(0)
    err = np.linalg.norm((coords - motion) * spacing[:, None, None, None], axis=0)
    return {c: (float(organ_metrics(pred == c, truth == c, tuple(spacing))["dice"]), float(err[truth == c].mean()))
            for c in organs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/openkbp/train", help="OpenKBP train folder")
    ap.add_argument("--split", default="train", help="split of configs/openkbp_splits.json (default: train)")
    ap.add_argument("--skip", type=int, default=10, help="patients of the split skipped first (default 10)")
    ap.add_argument("--patients", type=int, default=8, help="patients, one simulated fraction each (default 8)")
    ap.add_argument("--iterations", type=int, nargs="+", default=[100, 50], help="demons iteration counts to compare")
    ap.add_argument("--sigma", type=float, nargs="+", default=[DemonsOptions().field_sigma],
                    help="field smoothing sigmas (mm) to compare")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: OpenKBP data not found (../shared/data/openkbp/train expected)")
    logging.basicConfig(level=logging.WARNING)
    splits = json.loads((ROOT / "configs/openkbp_splits.json").read_text())
    settings = {f"{n} it, {s:g} mm": replace(DemonsOptions(), iterations=n, field_sigma=s)
                for s in args.sigma for n in args.iterations}
    rows = []
    for place, case in enumerate(splits[args.split][args.skip:args.skip + args.patients], start=args.skip):
        ct, lab = read_nifti(args.data / f"{case}_ct.nii.gz"), read_nifti(args.data / f"{case}_labels.nii.gz")
        seed = place + (100 if args.split == "train" else 0)  # the seeds the earlier settings were chosen with
        fct, flab, motion = simulate_hn_fraction_and_motion(ct, lab, seed, 1)
        truth, plan = np.asarray(flab.array), np.asarray(lab.array)
        spacing = np.linalg.norm(ct.affine[:3, :3], axis=0)
        organs = [c for c in sorted(int(v) for v in np.unique(plan) if v) if (truth == c).any()]
        base = register(fct, ct, demons=None)["deformable"].coords
        variants = {"B-spline only": (base, 0.0)}
        variants.update({name: refine(fct, ct, base, opts) for name, opts in settings.items()})
        row = {"patient": case, "seed": seed, "settings": {}}
        for name, (coords, seconds) in variants.items():
            jac = coords_jacobian(fct, ct, coords)
            per = score(coords, plan, truth, motion, spacing, organs)
            row["settings"][name] = {"seconds": round(seconds, 2), "jacobian_min": jac["min"],
                                     "folding_fraction": jac["folding_fraction"], "organs": per,
                                     "mean_dice": float(np.mean([d for d, _ in per.values()]))}
        rows.append(row)
        print(case, {k: (round(v["mean_dice"], 4), v["seconds"]) for k, v in row["settings"].items()}, flush=True)
    print("\n| setting | mean Dice | seconds per fraction | smallest Jacobian |\n| --- | --- | --- | --- |")
    for name in ["B-spline only", *settings]:
        got = [r["settings"][name] for r in rows]
        organ_means: dict[int, list[float]] = {}
        for g in got:
            for c, (d, _) in g["organs"].items():
                organ_means.setdefault(c, []).append(d)
        mean = float(np.mean([np.mean(v) for v in organ_means.values()]))
        secs = [g["seconds"] for g in got]
        print(f"| {name} | {mean:.4f} | {min(secs):.1f}-{max(secs):.1f} | {min(g['jacobian_min'] for g in got):.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
