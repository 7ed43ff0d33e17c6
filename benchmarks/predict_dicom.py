"""DICOM CT series -> RTSTRUCT end to end, as a user runs it: one ``rtseg predict`` process.

Data and model are benchmarks/predict.py's (synthetic pelvic CT, default 512x512x160 at
0.98x0.98x2.5 mm, written here as a DICOM series; ResUnet_3D with set weights). The timed
command is ``python -m rtseg predict --input SERIES --format nifti rtstruct --device DEV``
in a fresh process: process start, imports, model load, reading the series, the network,
contours and the RTSTRUCT file. Baseline in the same run: the phantom's truth, and the
NIfTI labels of the same process, which the RTSTRUCT read back must reproduce (Dice >= 0.95
per organ, or exit 1): the contours are checked, not only timed.

The process runs ``rtseg``'s own CLI through ``benchmarks/step_timers.py``, which only wraps the
functions of each step with a timer (read, preprocess, network, way back, QA, NIfTI, contours,
RTSTRUCT writing); ``--plain`` runs ``python -m rtseg`` itself. The process's CPU seconds (user +
system) are reported next to its wall time: on a shared machine they move less than the wall time.

    PYTHONPATH=src python benchmarks/predict_dicom.py                        # precision auto (bf16 where native)
    PYTHONPATH=src python benchmarks/predict_dicom.py --precision fp32       # the fp32 reference

    PYTHONPATH=src python benchmarks/predict_dicom.py --device cuda --figures figures.jsonl
    PYTHONPATH=src python benchmarks/predict_dicom.py --shape 256 256 32 --target-spacing 3.92 3.92 5 --roi 32 32 16
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figure_log import record  # noqa: E402
from predict import NAMES, SPACING, build_checkpoint, dice, make_ct  # noqa: E402

from rtseg.io.dicom.series import read_dicom_series, write_dicom_series  # noqa: E402
from rtseg.io.nifti import read_nifti  # noqa: E402
from rtseg.io.rtstruct import rtstruct_to_labels  # noqa: E402
from rtseg.io.volume import Volume, affine_from_spacing  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def write_series(shape: tuple[int, int, int], folder: Path) -> np.ndarray:
    """The phantom CT as a DICOM series in ``folder``; returns its truth labels on the series' grid."""
    ct, truth = make_ct(shape)
    write_dicom_series(Volume(ct, affine_from_spacing(SPACING)), folder)
    back = read_dicom_series(folder)
    if not np.array_equal(back.array, ct):
        raise SystemExit("predict_dicom: the series read back differs from the CT written (axis order changed)")
    return truth


def run_predict(ckpt: Path, series: Path, out: Path, args: argparse.Namespace) -> tuple[float, float, dict]:
    """(process wall seconds, the case's seconds from summary.csv, step seconds + CPU seconds) of one
    ``rtseg predict`` process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    steps_json = out.parent / f"{out.name}_steps.json"
    head = [sys.executable, "-m", "rtseg"] if args.plain else [sys.executable, str(REPO / "benchmarks" / "step_timers.py"),
                                                               str(steps_json)]
    cmd = head + ["predict", "--checkpoint", str(ckpt), "--input", str(series), "--output", str(out),
                  "--format", "nifti", "rtstruct", "--device", args.device, "--precision", args.precision]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    steps = json.loads(steps_json.read_text()) if steps_json.exists() else {}
    steps["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != 1 or rows[0]["status"] != "ok":
        raise SystemExit(f"predict_dicom: rtseg predict did not predict the series: {rows}")
    steps["startup"] = wall - steps.get("case", float(rows[0]["seconds"]))
    return wall, float(rows[0]["seconds"]), steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 160], help="CT size (default 512 512 160)")
    ap.add_argument("--roi", type=int, nargs=3, default=[128, 128, 64], help="patch size (default 128 128 64)")
    ap.add_argument("--base-filters", type=int, default=16, help="ResUnet_3D BASE_FILTERS (default 16)")
    ap.add_argument("--target-spacing", type=float, nargs=3, default=[1.96, 1.96, 2.5],
                    help="network grid spacing in mm (default 1.96 1.96 2.5)")
    ap.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]: rtseg predict's --device")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                    help="rtseg predict --precision (default auto: bf16 on CPUs with native bf16)")
    ap.add_argument("--plain", action="store_true", help="run python -m rtseg itself (no step timers)")
    ap.add_argument("--keep", metavar="DIR", help="write the series, checkpoint and outputs here (kept; "
                    "reused by the next run with the same DIR and --shape) instead of a temporary folder")
    ap.add_argument("--figures", metavar="JSONL", help="append each figure as a JSON line to this file")
    args = ap.parse_args()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(args.keep or tmp)
        t.mkdir(parents=True, exist_ok=True)
        if args.keep and (t / "ct").is_dir() and (t / "bench.pt").is_file():  # made by an earlier run: reused
            truth = make_ct(tuple(args.shape))[1]
        else:
            build_checkpoint(t / "bench.pt", args)
            truth = write_series(tuple(args.shape), t / "ct")
        shutil.rmtree(t / f"out_{args.precision}", ignore_errors=True)
        wall, case, steps = run_predict(t / "bench.pt", t / "ct", t / f"out_{args.precision}", args)
        series = read_dicom_series(t / "ct")
        labels = read_nifti(t / f"out_{args.precision}" / "ct_pred.nii.gz").array
        back, _ = rtstruct_to_labels(t / f"out_{args.precision}" / "ct_rtstruct.dcm", series, NAMES)
    organs = range(1, len(NAMES))
    vs_nifti = {NAMES[c]: dice(back.array == c, labels == c) for c in organs}
    vs_truth = {NAMES[c]: dice(back.array == c, truth == c) for c in organs}
    print(f"CT {'x'.join(map(str, args.shape))} as a DICOM series; rtseg predict --format nifti rtstruct "
          f"--device {args.device} --precision {args.precision}: process {wall:.2f} s, case {case:.2f} s (summary.csv), "
          f"CPU {steps['cpu']:.2f} s (user + system); load average {os.getloadavg()[0]:.2f}")
    order = ("startup", "read", "preprocess", "network", "way_back", "postprocess", "qa", "nifti", "contours",
             "rtstruct_write")
    print("steps (s): " + ", ".join(f"{k} {steps[k]:.2f}" for k in order if k in steps))
    print("RTSTRUCT read back vs the NIfTI labels, Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in vs_nifti.items()))
    print("RTSTRUCT read back vs the phantom's truth, Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in vs_truth.items()))
    seconds, extra = time.perf_counter() - t_all, {"device": args.device, "ct": "x".join(map(str, args.shape)),
                                                   "precision": args.precision, "load": round(os.getloadavg()[0], 2)}
    record(args.figures, "dicom_rtstruct.process", wall, "s", seconds, **extra)
    record(args.figures, "dicom_rtstruct.case", case, "s", seconds, **extra)
    record(args.figures, "dicom_rtstruct.cpu", steps["cpu"], "s", seconds, **extra)
    for k, v in steps.items():
        if k not in ("cpu", "case", "process_in_python", "cpu_user", "cpu_system", "peak_rss_gib"):
            record(args.figures, f"dicom_rtstruct.step.{k}", v, "s", seconds, **extra)
    record(args.figures, "dicom_rtstruct.min_dice_vs_nifti", min(vs_nifti.values()), "Dice", seconds, **extra)
    record(args.figures, "dicom_rtstruct.mean_dice_vs_truth", float(np.mean(list(vs_truth.values()))), "Dice",
           seconds, **extra)
    ok = min(vs_nifti.values()) >= 0.95
    print("contour check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
