"""Benchmark: rtseg's per-organ metrics vs MONAI's on one 512x512x160 pelvic-sized case.

Generates 5 ellipsoidal organs of realistic size at 0.98 x 0.98 x 3 mm, a prediction made by
perturbing each organ (shifted centre, scaled radii, smooth surface noise), then times
``rtseg.evaluation.surface.case_metrics`` and MONAI's DiceMetric, HausdorffDistanceMetric
(percentile=95), SurfaceDistanceMetric(symmetric=True) and SurfaceDiceMetric in the same run,
asserts the values agree and prints seconds and the speed ratio.

    .venv/bin/python benchmarks/metrics.py [--shape 512 512 160] [--repeats 3]
"""
from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch

from rtseg.evaluation.surface import case_metrics
from rtseg.synthetic.ellipsoids import METRICS_SPACING as SPACING
from rtseg.synthetic.ellipsoids import perturbed_segmentation as make_case

NAMES = ("background", "prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right")


def ours(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    rows = case_metrics(pred, gt, SPACING, NAMES, tolerance_mm=2.0)
    return {k: np.array([r[k] for r in rows]) for k in ("dice", "hd95", "assd", "surface_dice")}


def monai_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric, SurfaceDistanceMetric

    n = len(NAMES)
    # One-hot float tensors [1, C, X, Y, Z] as MONAI expects (built outside the timed region).
    p = torch.from_numpy(np.stack([pred == c for c in range(n)])[None].astype(np.float32))
    g = torch.from_numpy(np.stack([gt == c for c in range(n)])[None].astype(np.float32))
    t0 = time.perf_counter()
    out = {
        "dice": DiceMetric(include_background=False, ignore_empty=False)(p, g),
        "hd95": HausdorffDistanceMetric(include_background=False, percentile=95)(p, g, spacing=SPACING),
        "assd": SurfaceDistanceMetric(include_background=False, symmetric=True)(p, g, spacing=SPACING),
        "surface_dice": SurfaceDiceMetric([2.0] * (n - 1), include_background=False)(p, g, spacing=SPACING),
    }
    monai_metrics.seconds = time.perf_counter() - t0  # type: ignore[attr-defined]
    return {k: v.numpy().reshape(-1).astype(np.float64) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 160), help="volume shape in voxels")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each implementation (best is reported)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    shape = tuple(args.shape)
    pred, gt = make_case(shape)  # type: ignore[arg-type]
    print(f"case {shape} at {SPACING} mm, {len(NAMES) - 1} organs, torch threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")

    t_ours, t_monai = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        a = ours(pred, gt)
        t_ours.append(time.perf_counter() - t0)
        b = monai_metrics(pred, gt)
        t_monai.append(monai_metrics.seconds)  # type: ignore[attr-defined]
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)
    print("values equal (rtol 1e-5):")
    for i, name in enumerate(NAMES[1:]):
        print(f"  {name:<20}" + "  ".join(f"{k}={a[k][i]:.4f}" for k in a))
    best_ours, best_monai = min(t_ours), min(t_monai)
    print(f"rtseg case_metrics (all metrics): {best_ours:.3f} s (best of {args.repeats})")
    print(f"MONAI Dice+HD95+ASSD+SurfaceDice: {best_monai:.3f} s (best of {args.repeats}; one-hot conversion not timed)")
    print(f"speed-up: {best_monai / best_ours:.1f}x")


if __name__ == "__main__":
    main()
