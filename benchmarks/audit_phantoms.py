"""Benchmark and docs figures: a simulated audit study on phantoms (simulated data, no patient).

``--cases`` synthetic pelvic CTs (rtseg.synthetic) are written as DICOM; the "auto" structure set of each
holds the phantom's own organs (standing in for a model's output, model version ``0123456789ab``), and
the "approved" set is the auto set edited the way a physician might, with pydicom on the contour points:
the bladder moved by 0 or 1 voxel (4 mm) at random, the rectum by 1 voxel in one case in four; from case
``--drift-from`` on, the bladder is moved by 2 to 3 voxels (a simulated drift, e.g. after a protocol change).
Then ``rtseg audit compare`` and ``rtseg audit report`` (window 10, margin 0.05) run on the folders; the
per-organ table, the drift states and the seconds each step took are printed and written to
``OUT/figures.json``.

    PYTHONPATH=src .venv/bin/python benchmarks/audit_phantoms.py --cases 30 --out /tmp/audit_bench
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from rtseg.audit.compare import compare_folders
from rtseg.audit.report import build_report
from rtseg.io.dicom.series import read_dicom_series
from rtseg.io.dicom.write import write_dicom_series
from rtseg.io.rtstruct import write_rtstruct
from rtseg.labels import PELVIS_CLASS_NAMES, default_colors
from rtseg.synthetic.patient import generate_patient

MODEL = "0123456789ab"


def shift_rois(src: Path, dst: Path, shifts: dict[str, float], date: str) -> None:
    ds = pydicom.dcmread(src)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    for rc in ds.ROIContourSequence:
        d = shifts.get(names[int(rc.ReferencedROINumber)], 0.0)
        for c in rc.get("ContourSequence", []) if d else []:
            pts = np.asarray([float(v) for v in c.ContourData]).reshape(-1, 3)
            pts[:, 0] += d
            c.ContourData = [f"{v:.4f}" for v in pts.reshape(-1)]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.SeriesDescription, ds.StructureSetLabel = generate_uid(), "approved", "Approved"
    ds.ApprovalStatus, ds.StructureSetDate, ds.StructureSetTime = "APPROVED", date, "100000"
    ds.ReviewDate, ds.ReviewTime, ds.ReviewerName = date, "100000", "Dr^Sim"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)


def make_study(root: Path, n: int, drift_from: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    names = list(PELVIS_CLASS_NAMES)
    for i in range(n):
        ct, labels = generate_patient(1000 + i, (64, 64, 24), (4.0, 4.0, 5.0))
        folder = root / "auto" / f"p{i:03d}"
        write_dicom_series(ct, folder / "ct", patient_name=f"Sim^{i}", patient_id=f"SIM{i:03d}")
        series = read_dicom_series(folder / "ct")
        write_rtstruct(labels.array, series, names, default_colors(len(names)), folder / "rtstruct.dcm")
        ds = pydicom.dcmread(folder / "rtstruct.dcm")
        ds.SeriesDescription = f"rtseg automatic contours, model {MODEL}"
        ds.save_as(folder / "rtstruct.dcm", enforce_file_format=True)
        bladder = 4.0 * (int(rng.integers(2, 4)) if i >= drift_from else int(rng.integers(0, 2)))
        rectum = 4.0 if rng.random() < 0.25 else 0.0
        day = 1 + i
        shift_rois(folder / "rtstruct.dcm", root / "approved" / f"p{i:03d}.dcm", {"Bladder": bladder, "Rectum": rectum},
                   f"2025{1 + day // 28:02d}{1 + day % 28:02d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=30)
    ap.add_argument("--drift-from", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    t0 = time.perf_counter()
    make_study(a.out, a.cases, a.drift_from, a.seed)
    t1 = time.perf_counter()
    res = compare_folders(a.out / "auto", a.out / "approved", a.out / "compare")
    t2 = time.perf_counter()
    rep = build_report([a.out / "compare"], a.out / "report", window=10, margin=0.05)
    t3 = time.perf_counter()
    print(rep.table)
    for d in rep.drift:
        print(d.text(0.05))
    figures = {"cases": a.cases, "drift_from": a.drift_from, "organ_rows": len(res.rows),
               "seconds": {"make_study": round(t1 - t0, 1), "compare": round(t2 - t1, 1), "report": round(t3 - t2, 1)},
               "compare_s_per_case": round((t2 - t1) / a.cases, 3), "summary": rep.summary,
               "drift": [d.as_dict() for d in rep.drift], "machine": platform.processor() or platform.machine()}
    (a.out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures["seconds"]), f"{figures['compare_s_per_case']} s per case")


if __name__ == "__main__":
    main()
