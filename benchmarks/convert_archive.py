"""Benchmark ``rtseg convert dicom-dataset``: a generated N-patient export (512x512x~150 CTs, two
structure sets each: a planning set with helpers and a physician set) converted on 2 processes.

    PYTHONPATH=src python benchmarks/convert_archive.py --patients 100 [--workers 2] [--keep DIR]

Prints the patients per minute of the conversion (header scan, grouping, rasterising, NIfTI writing,
dataset JSON, name report) and, separately, of the curation that follows it. The target is >= 10
patients per minute on 2 cores. One phantom anatomy is drawn and written with new UIDs per patient,
so generating a large export stays quick; conversion work is the same as for distinct patients.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from archive_export import CLASSES, phantom, standard_sets, write_ct, write_structure_set  # noqa: E402
from rtseg.io.archive.convert import convert_dicom_archive  # noqa: E402
from rtseg.review.curation import curate_dataset  # noqa: E402
from rtseg.review.curation_pages import write_curation  # noqa: E402


def generate(root: Path, n: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
    ct, lab = phantom(1, shape, spacing)
    for i in range(n):
        s = write_ct(ct, root / f"patient_{i:03d}" / "CT", f"{i:03d}", no_extension=i % 2 == 1)
        plan, md = standard_sets(planning_newer=i % 3 != 0)
        plan.helpers = ("PTV70", "BODY")  # type: ignore[misc]
        md.helpers = ()  # type: ignore[misc]
        write_structure_set(plan, lab, ct.array, s, root / f"patient_{i:03d}" / "RS_plan.dcm")
        write_structure_set(md, lab, ct.array, s, root / f"patient_{i:03d}" / "RS_md.dcm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slices", type=int, default=150)
    ap.add_argument("--keep", type=Path, help="generate into (or reuse) this folder and keep it")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rtseg_archive_"))
    export = args.keep or work / "export"
    try:
        t0 = time.perf_counter()
        if not export.exists():
            generate(export, args.patients, (512, 512, args.slices), (0.98, 0.98, 2.5))
        t1 = time.perf_counter()
        report = convert_dicom_archive(export, work / "out", CLASSES, workers=args.workers, progress=False)
        t2 = time.perf_counter()
        write_curation(curate_dataset(work / "out" / "rtseg_dataset.json", workers=args.workers, progress=False),
                       work / "out" / "rtseg_dataset.json")
        t3 = time.perf_counter()
        n = len(report.usable)
        print(f"generated {args.patients} patients (512x512x{args.slices}, 2 structure sets each) in {t1 - t0:.0f} s")
        print(f"convert: {report.summary()} in {t2 - t1:.1f} s on {args.workers} workers: {60 * n / (t2 - t1):.1f} patients/min")
        print(f"curation: {t3 - t2:.1f} s: {60 * n / (t3 - t2):.1f} patients/min; "
              f"convert + curation {60 * n / (t3 - t1):.1f} patients/min")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
