"""DICOM CT series -> RTSTRUCT end to end, as a user runs it: one ``rtseg predict`` process.

Data and model are benchmarks/predict.py's (synthetic pelvic CT, default 512x512x160 at
0.98x0.98x2.5 mm, written here as a DICOM series; ResUnet_3D with set weights). The timed
command is ``python -m rtseg predict --input SERIES --format nifti rtstruct --device DEV``
in a fresh process: process start, imports, model load, reading the series, the network,
contours and the RTSTRUCT file. Baseline in the same run: the phantom's truth, and the
NIfTI labels of the same process, which the RTSTRUCT read back must reproduce (Dice >= 0.95
per organ, or exit 1): the contours are checked, not only timed.

    PYTHONPATH=src python benchmarks/predict_dicom.py --device cuda --figures figures.jsonl
    PYTHONPATH=src python benchmarks/predict_dicom.py --shape 256 256 32 --target-spacing 3.92 3.92 5 --roi 32 32 16
"""
from __future__ import annotations

import argparse
import csv
import os
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


def run_predict(ckpt: Path, series: Path, out: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(process wall seconds, the case's seconds from summary.csv) of one ``rtseg predict`` process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "rtseg", "predict", "--checkpoint", str(ckpt), "--input", str(series),
           "--output", str(out), "--format", "nifti", "rtstruct", "--device", args.device]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    wall = time.perf_counter() - t0
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if len(rows) != 1 or rows[0]["status"] != "ok":
        raise SystemExit(f"predict_dicom: rtseg predict did not predict the series: {rows}")
    return wall, float(rows[0]["seconds"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 160], help="CT size (default 512 512 160)")
    ap.add_argument("--roi", type=int, nargs=3, default=[128, 128, 64], help="patch size (default 128 128 64)")
    ap.add_argument("--base-filters", type=int, default=16, help="ResUnet_3D BASE_FILTERS (default 16)")
    ap.add_argument("--target-spacing", type=float, nargs=3, default=[1.96, 1.96, 2.5],
                    help="network grid spacing in mm (default 1.96 1.96 2.5)")
    ap.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]: rtseg predict's --device")
    ap.add_argument("--figures", metavar="JSONL", help="append each figure as a JSON line to this file")
    args = ap.parse_args()
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        build_checkpoint(t / "bench.pt", args)
        truth = write_series(tuple(args.shape), t / "ct")
        wall, case = run_predict(t / "bench.pt", t / "ct", t / "out", args)
        series = read_dicom_series(t / "ct")
        labels = read_nifti(t / "out" / "ct_pred.nii.gz").array
        back, _ = rtstruct_to_labels(t / "out" / "ct_rtstruct.dcm", series, NAMES)
    organs = range(1, len(NAMES))
    vs_nifti = {NAMES[c]: dice(back.array == c, labels == c) for c in organs}
    vs_truth = {NAMES[c]: dice(back.array == c, truth == c) for c in organs}
    print(f"CT {'x'.join(map(str, args.shape))} as a DICOM series; rtseg predict --format nifti rtstruct "
          f"--device {args.device}: process {wall:.2f} s, case {case:.2f} s (summary.csv)")
    print("RTSTRUCT read back vs the NIfTI labels, Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in vs_nifti.items()))
    print("RTSTRUCT read back vs the phantom's truth, Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in vs_truth.items()))
    seconds, extra = time.perf_counter() - t_all, {"device": args.device, "ct": "x".join(map(str, args.shape))}
    record(args.figures, "dicom_rtstruct.process", wall, "s", seconds, **extra)
    record(args.figures, "dicom_rtstruct.case", case, "s", seconds, **extra)
    record(args.figures, "dicom_rtstruct.min_dice_vs_nifti", min(vs_nifti.values()), "Dice", seconds, **extra)
    record(args.figures, "dicom_rtstruct.mean_dice_vs_truth", float(np.mean(list(vs_truth.values()))), "Dice",
           seconds, **extra)
    ok = min(vs_nifti.values()) >= 0.95
    print("contour check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
