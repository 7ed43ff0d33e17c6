"""How calibrated are rtseg's probabilities? A demo-sized model on phantoms, before and after temperature scaling.

    OMP_NUM_THREADS=1 python benchmarks/calibration.py --iterations 200 --out /tmp/calib --figure docs/images/reliability.png

Generates the demo's phantoms (24 patients: 18 train / 2 validation / 4 test), trains ResUnet_3D
for a fixed number of iterations (the demo's config), then runs ``rtseg calibrate`` on the
validation split with the test split held out, and prints ECE (top-label, 15 bins, voxels within
10 mm of an organ) before and after the fitted temperature. ``--figure`` draws the reliability
diagrams (validation and test, before and after).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from rtseg.apps.demo import DEMO_SHAPE, DEMO_SPACING, demo_config
from rtseg.cli.main import main
from rtseg.synthetic import write_phantom_dataset
from rtseg.training.trainer import fit

MIN_BIN_VOXELS = 20  # bins with fewer voxels are not drawn (their accuracy is noise); ECE counts every voxel


def reliability_figure(result: dict[str, Any], path: Path) -> Path:
    """Accuracy against confidence per bin, before and after T, for the fit and the held-out split."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    parts = [p for p in (result["fit"], result.get("eval")) if p]
    fig = Figure(figsize=(4.2 * len(parts), 4.0), dpi=90)
    for i, part in enumerate(parts):
        ax = fig.add_subplot(1, len(parts), i + 1)
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
        for key, colour, name in (("reliability_before", "tab:red", "T = 1"),
                                  ("reliability_after", "tab:blue", f"T = {result['temperature']:.2f}")):
            rel = part[key]
            pts = [(c, a) for c, a, n in zip(rel["confidence"], rel["accuracy"], rel["count"]) if n >= MIN_BIN_VOXELS]
            ax.plot([c for c, _ in pts], [a for _, a in pts], "o-", color=colour, ms=3,
                    label=f"{name}: ECE {rel['ece']:.3f}")
        ax.set(xlabel="confidence (largest class probability)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
               title=f"{part['split']}: {part['n_cases']} cases, {part['n_voxels']:,} voxels")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def run(out: Path, iterations: int, base_filters: int, seed: int) -> dict[str, Any]:
    data = out / "data"
    write_phantom_dataset(data, layout="nifti", seed=seed, splits={"train": 18, "val": 2, "test": 4},
                          shape=DEMO_SHAPE, spacing=DEMO_SPACING, overwrite=True, progress=False)
    cfg = demo_config(data, out / "runs", iterations, 60.0, base_filters, cuda=False)  # stops at the iteration count
    t0 = time.perf_counter()
    summary = fit(cfg, "calibration", run_dir=out / "run")
    minutes = (time.perf_counter() - t0) / 60
    best = out / "run" / "checkpoints" / "best.pt"
    calibrated = out / "calibrated.pt"
    rc = main(["calibrate", "-c", str(out / "run" / "config.yaml"), "--checkpoint", str(best), "--eval-split", "test",
               "--out", str(calibrated), "--device", "cpu"])
    if rc != 0:
        raise SystemExit(rc)
    result = json.loads(calibrated.with_name("calibrated_calibration.json").read_text())
    result.update(iterations=summary["iterations"], training_minutes=round(minutes, 2),
                  best_mean_dice=summary["best_mean_dice"])
    return result


def main_cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("calibration_bench"), help="work folder")
    ap.add_argument("--iterations", type=int, default=200, help="training iterations (default 200)")
    ap.add_argument("--base-filters", type=int, default=8, help="ResUnet_3D width (default 8, as the demo)")
    ap.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    ap.add_argument("--figure", type=Path, help="write the reliability diagrams here (PNG)")
    args = ap.parse_args()
    result = run(args.out, args.iterations, args.base_filters, args.seed)
    print(f"{result['iterations']} iterations in {result['training_minutes']:.1f} min, "
          f"best validation mean Dice {result['best_mean_dice']:.3f}")
    print("| split | cases | voxels | ECE T=1 | ECE after | ")
    print("|---|---:|---:|---:|---:|")
    for part in (result["fit"], result.get("eval")):
        print(f"| {part['split']} | {part['n_cases']} | {part['n_voxels']} | {part['ece_before']:.4f} | {part['ece_after']:.4f} |")
    print(f"temperature {result['temperature']:.3f}; NLL {result['nll_before']:.4f} -> {result['nll_after']:.4f} (validation)")
    if args.figure:
        print(f"figure: {reliability_figure(result, args.figure)}")


if __name__ == "__main__":
    main_cli()
