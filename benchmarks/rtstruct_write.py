"""DICOM CT read -> RTSTRUCT, end to end, split by stage; rtseg's writer vs the writer it replaced.

Data: a synthetic 512x512x160 CT series (0.977 x 0.977 x 2 mm, written with
``write_dicom_series``) and 5 pelvic organs drawn as ellipsoids (the rectum
hollow, so every one of its slices has a hole). Baseline: ``write_rtstruct``
as of commit 3b0c831 (scikit-image ``approximate_polygon`` per contour, pydicom
DS values), loaded from git in the same run. Both files are read back with
rtseg's reader and compared voxel by voxel with the labels. Wall and CPU
seconds are printed (CPU is the steadier figure on a shared machine); the
stage split is clocked inside the timed write. Figures: docs/CLINICAL_IO.md.

    PYTHONPATH=src python benchmarks/rtstruct_write.py [--slices 160] [--repeat 3] [--rough 0.15]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from scipy import ndimage

from rtseg.io.rtstruct.contours import DEFAULT_TOLERANCE_MM, effective_tolerance
from rtseg.io.dicom.series import read_dicom_series, write_dicom_series
from rtseg.io.rtstruct import rtstruct_to_labels, write_rtstruct
from rtseg.io.rtstruct import write as writer
from rtseg.io.volume import Volume

BASELINE_COMMIT = "3b0c831"
CLASSES = ["background", "prostate", "bladder", "rectum", "femoral_head_left", "femoral_head_right"]
COLORS = [(0, 255, 255), (204, 0, 102), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
SPACING = (0.977, 0.977, 2.0)


def phantom(shape: tuple[int, int, int], rough: float = 0.15, seed: int = 0) -> np.ndarray:
    """Five organs in mm around the centre of the grid; the rectum is a hollow ellipsoid.

    ``rough`` wrinkles the surfaces (a smoothed random field, relative to the
    radius) so that the outlines look like a network's rather than ideal ellipses.
    """
    axes = [(np.arange(n) - n / 2) * s for n, s in zip(shape, SPACING)]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    rng = np.random.default_rng(seed)
    field = np.zeros(shape, np.float32)
    for step in (16, 3):  # wrinkles of ~16 and ~3 voxels
        coarse = [max(2, n // step) for n in shape]
        f = ndimage.zoom(rng.standard_normal(coarse).astype(np.float32), [n / c for n, c in zip(shape, coarse)], order=1)
        field += f[: shape[0], : shape[1], : shape[2]] * (rough / max(float(f.std()), 1e-6))

    def ell(c: tuple[float, float, float], r: tuple[float, float, float]) -> np.ndarray:
        return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2 <= 1 + field

    lab = np.zeros(shape, np.uint8)
    lab[ell((0, -30, 30), (45, 35, 35))] = 2
    lab[ell((0, 12, -20), (22, 18, 20))] = 1
    lab[ell((0, 50, -10), (20, 20, 80)) & ~ell((0, 50, -10), (10, 10, 75))] = 3
    lab[ell((-95, 10, -30), (25, 25, 25))] = 4
    lab[ell((95, 10, -30), (25, 25, 25))] = 5
    return lab


def load_baseline(repo: Path):  # noqa: ANN201 - a module loaded from git
    src = subprocess.run(["git", "-C", str(repo), "show", f"{BASELINE_COMMIT}:src/rtseg/io/rtstruct/write.py"],
                         capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("rtseg_rtstruct_write_baseline", loader=None)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    exec(compile(src, f"{BASELINE_COMMIT}:rtstruct_write.py", "exec"), mod.__dict__)
    return mod


def timed(fn, repeat: int) -> tuple[float, float, object]:  # noqa: ANN001
    """Fastest of ``repeat`` runs: (wall seconds, CPU seconds of this process, result)."""
    best, out = (float("inf"), float("inf")), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - t0, time.process_time() - c0))
    return best[0], best[1], out


class StageClock:
    """Wraps a function of rtseg_rtstruct_write so that the time spent in it is summed, inside the full write."""

    def __init__(self, module, name: str) -> None:  # noqa: ANN001
        self.module, self.name, self.fn, self.seconds = module, name, getattr(module, name), 0.0

    def __enter__(self) -> "StageClock":
        def wrapped(*a, **k):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return self.fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0

        setattr(self.module, self.name, wrapped)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        setattr(self.module, self.name, self.fn)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int, default=160, help="number of CT slices (512x512 each)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per stage; the fastest is reported")
    ap.add_argument("--rough", type=float, default=0.15,
                    help="surface wrinkling relative to the organ radius (more: longer, noisier outlines)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the old writer (it takes about a minute)")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    shape = (512, 512, args.slices)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        aff = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
        aff[:3, 3] = (250.0, 250.0, -160.0)
        write_dicom_series(Volume(np.zeros(shape, np.int16), aff), t / "ct")
        t_read, c_read, ct = timed(lambda: read_dicom_series(t / "ct"), 1)
        labels = phantom(ct.shape, args.rough)
        tol = effective_tolerance(DEFAULT_TOLERANCE_MM, ct.spacing[:2])
        best = None
        for _ in range(args.repeat):
            with StageClock(writer, "_roi_polygons") as clock:
                t_new, c_new, _ = timed(lambda: write_rtstruct(labels, ct, CLASSES, COLORS, t / "new.dcm"), 1)
            if best is None or t_new < best[0]:
                best = (t_new, c_new, clock.seconds)
        t_new, c_new, t_contours = best
        n_points = sum(len(c.ContourData) // 3 for r in pydicom.dcmread(t / "new.dcm").ROIContourSequence
                       for c in r.ContourSequence)
        rows = [("read DICOM series", t_read, c_read),
                ("contours (marching squares, keyhole, simplify)", t_contours, None),
                ("DS formatting, encoding, file write", t_new - t_contours, None),
                ("rtseg write_rtstruct", t_new, c_new)]
        t_back, c_back, (back, _) = timed(lambda: rtstruct_to_labels(t / "new.dcm", ct, CLASSES), 1)
        rows.append(("read back (rtstruct_to_labels)", t_back, c_back))
        exact = {CLASSES[c]: bool(np.array_equal(back.array == c, labels == c)) for c in range(1, len(CLASSES))}
        if not args.no_baseline:
            old = load_baseline(repo)
            t_old, c_old, _ = timed(lambda: old.write_rtstruct(labels, ct, CLASSES, COLORS, t / "old.dcm"), 1)
            rows.append((f"baseline write_rtstruct ({BASELINE_COMMIT})", t_old, c_old))
            old_back, _ = rtstruct_to_labels(t / "old.dcm", ct, CLASSES)
            n_old = sum(len(c.ContourData) // 3 for r in pydicom.dcmread(t / "old.dcm").ROIContourSequence
                        for c in r.ContourSequence)
            print(f"# baseline: {n_old} contour points; voxels that differ between the two files' labels: "
                  f"{int(np.count_nonzero(old_back.array != back.array))}")
        print(f"# CT {shape[0]}x{shape[1]}x{shape[2]}, 5 organs, keyhole holes, tolerance {tol:.3f} mm, "
              f"{n_points} contour points, {(t / 'new.dcm').stat().st_size / 1e6:.1f} MB")
        print(f"{'stage':<50} {'wall s':>8} {'CPU s':>8}")
        for name, sec, cpu in rows:
            print(f"{name:<50} {sec:8.2f} {'' if cpu is None else f'{cpu:8.2f}':>8}")
        print(f"{'end to end (read + write)':<50} {t_read + t_new:8.2f}")
        if not args.no_baseline:
            print(f"speed-up of the writer: {t_old / t_new:.1f}x (end to end {(t_read + t_old) / (t_read + t_new):.1f}x)")
        print("read back voxel-exact:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in exact.items()))
    return 0 if all(exact.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
