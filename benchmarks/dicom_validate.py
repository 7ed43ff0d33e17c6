"""What the DICOM check before every write costs: ``check_written`` on a large RTSTRUCT and a SEG.

Data: benchmarks/rtstruct_write.py's synthetic 512x512xN CT series (0.977 x 0.977 x 2 mm) with 5 pelvic organs
(simulated). Times the write (which includes the check) and the check alone on the written file (median of
``--repeat``); the check's share is what validation adds. Figures: docs/PERFORMANCE.md.

    PYTHONPATH=src python benchmarks/dicom_validate.py [--slices 160] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rtstruct_write import CLASSES, COLORS, SPACING, phantom  # noqa: E402

from rtseg.io.dicom.seg import write_seg  # noqa: E402
from rtseg.io.dicom.series import read_dicom_series, write_dicom_series  # noqa: E402
from rtseg.io.dicom.validate import check_written  # noqa: E402
from rtseg.io.rtstruct import write_rtstruct  # noqa: E402
from rtseg.io.volume import Volume, affine_from_spacing  # noqa: E402


def median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=160)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        labels = phantom((512, 512, args.slices))
        ct = np.where(labels > 0, 40, -1000).astype(np.int16)
        write_dicom_series(Volume(ct, affine_from_spacing(SPACING)), root / "ct")
        series = read_dicom_series(root / "ct")
        for kind, write in (("RTSTRUCT", write_rtstruct), ("SEG", write_seg)):
            path = root / f"{kind}.dcm"
            total = median_s(lambda: write(labels, series, CLASSES, COLORS, path), args.repeat)
            check = median_s(lambda: check_written(path, kind), args.repeat)
            print(f"{kind}: 512x512x{args.slices}, {path.stat().st_size / 1e6:.1f} MB: write (check included) "
                  f"{total:.2f} s, check alone {check:.3f} s ({100 * check / total:.1f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
