"""``rtseg convert dicom-dataset``: a clinic's DICOM export -> a training-ready NIfTI dataset.

Steps: scan every file's header (in parallel), sort them into cases (``rtseg.io.archive.scan``),
convert each case in a process pool (``rtseg.io.archive.case``: skip when its inputs are unchanged,
atomic per case), then write the dataset JSON, a training config, the ROI name report and
``conversion_report.json`` (``rtseg.io.archive.outputs``). Nothing written names a patient: case
names are folder names or hashes of UIDs, the reports carry UIDs, file names and reasons only.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from tqdm import tqdm

from rtseg.errors import DataError
from rtseg.io.archive.case import CaseJob, CaseResult, run_case
from rtseg.io.archive.outputs import write_dataset_json, write_name_report, write_train_config
from rtseg.io.archive.scan import ArchiveIndex, DicomFile, archive_files, index_archive, need_archive, read_headers
from rtseg.io.jsonfile import write_json
from rtseg.io.rtstruct.name_report import name_report, report_text
from rtseg.io.png_slices import natural_key
from rtseg.io.rtstruct.roi_names import match_roi_names

log = logging.getLogger(__name__)

REPORT_NAME = "conversion_report.json"
DEFAULT_WORKERS = 2
_CHUNK = 256
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class ArchiveReport:
    converted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # unchanged since an earlier run (also usable)
    failed: list[tuple[str, str]] = field(default_factory=list)
    refused_structure_sets: list[tuple[str, str]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    dicomdir: bool = False
    n_files: int = 0
    n_patients: int = 0
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def usable(self) -> list[str]:
        return sorted(self.converted + self.skipped, key=natural_key)

    def summary(self) -> str:
        total = len(self.usable) + len(self.failed)
        text = f"converted {len(self.usable)} of {total} cases"
        if self.skipped:
            text += f" ({len(self.skipped)} unchanged, skipped)"
        return text + (f", {len(self.failed)} failed" if self.failed else "")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool, unit: str) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` processes (in this process for 1), with a progress bar."""
    bar = tqdm(total=len(items), desc=desc, unit=unit, disable=None if progress else True)
    try:
        if workers <= 1 or len(items) <= 1:
            out = []
            for x in items:
                out.append(fn(x))
                bar.update()
            return out
        # spawn: the parent may hold threads (torch, a test runner) that a fork would copy mid-lock
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(fn, x) for x in items]
            for f in futures:
                f.add_done_callback(lambda _: bar.update())
            return [f.result() for f in futures]
    finally:
        bar.close()


def scan_archive(root: Path, workers: int, progress: bool) -> tuple[ArchiveIndex, int]:
    """Every file's header read (chunks in parallel) and sorted into cases; also the number of files."""
    files, dicomdir = archive_files(root)
    chunks = [files[i:i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    parts = parallel_map(read_headers, chunks, workers, "reading headers", progress, "chunk")
    headers: list[DicomFile] = [h for ok, _ in parts for h in ok]
    index = index_archive(root, headers)
    index.unreadable = [(str(Path(p).relative_to(root)), why) for _, bad in parts for p, why in bad]
    index.dicomdir = dicomdir
    return index, len(files)


def nothing_found(root: Path, n_files: int, index: ArchiveIndex) -> str:
    """The one-line error for an input without any CT series: the folder, what was looked for, what was found."""
    found = dict(index.ignored)
    if index.refused:
        found["RTSTRUCT"] = found.get("RTSTRUCT", 0) + len(index.refused)
    what = ", ".join(f"{n} {m}" for m, n in sorted(found.items()))
    if index.unreadable:
        what = ", ".join(filter(None, [what, f"{len(index.unreadable)} unreadable"]))
    seen = f"{n_files} DICOM file(s): {what}" if n_files else "no DICOM files"
    return (f"{root}: no CT series found ({seen}); expected CT image series (CT, Enhanced CT) with the RTSTRUCTs "
            "drawn on them, in any folder layout")


def _aliases_key(aliases: Mapping[str, Sequence[str]] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((k, tuple(v)) for k, v in (aliases or {}).items()))


def _collect(report: ArchiveReport, results: Iterable[CaseResult]) -> dict[str, dict[str, Any]]:
    records = {}
    for r in results:
        if r.status == "failed":
            report.failed.append((r.name, r.reason))
            continue
        (report.skipped if r.status == "skipped" else report.converted).append(r.name)
        assert r.record is not None
        records[r.name] = r.record
        if r.record.get("notes"):
            report.notes[r.name] = "; ".join(r.record["notes"])
    return records


def convert_dicom_archive(
    input_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    class_names: Sequence[str],
    aliases: Mapping[str, Sequence[str]] | None = None,
    workers: int = DEFAULT_WORKERS,
    progress: bool = True,
) -> ArchiveReport:
    """Convert an export (see the module docstring); returns what happened, also written to OUT/conversion_report.json."""
    root, named_dicomdir = need_archive(input_dir)
    out = Path(out_dir)
    match_roi_names([], class_names, aliases)  # a bad alias table fails once, before any work
    index, n_files = scan_archive(root, workers, progress)
    if index.n_ct_series == 0:
        raise DataError(nothing_found(root, n_files, index))
    report = ArchiveReport(failed=list(index.failed), refused_structure_sets=index.refused, ignored=index.ignored,
                           unreadable=index.unreadable, dicomdir=index.dicomdir or named_dicomdir, n_files=n_files,
                           n_patients=index.n_patients)
    jobs = [CaseJob(c, root, out, tuple(class_names), _aliases_key(aliases)) for c in index.cases]
    out.mkdir(parents=True, exist_ok=True)
    records = _collect(report, parallel_map(run_case, jobs, workers, "dicom-dataset", progress, "case"))
    report.converted.sort(key=natural_key)
    report.skipped.sort(key=natural_key)
    report.failed.sort(key=lambda f: natural_key(f[0]))
    names = name_report([r["roi_names"] for r in records.values()], class_names)
    json_path, text_path = write_name_report(out, names, report_text(names))
    report.outputs = {"name_report": str(text_path), "name_report_json": str(json_path)}
    if records:
        report.outputs["dataset_json"] = str(write_dataset_json(out, class_names, records))
        report.outputs["config"] = str(write_train_config(out, class_names))
    write_json(asdict(report), out / REPORT_NAME)
    return report
