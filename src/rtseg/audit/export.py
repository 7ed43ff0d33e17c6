"""``rtseg audit export-dataset``: the approved cases (CT + the approved set's organs) as an rtseg dataset.

The archive import does the work (:func:`rtseg.io.archive.convert.convert_dicom_archive`): it is given a
staging folder of links to each paired CT series and its approved structure set only, so the dataset
holds the physicians' contours, with the per-case organ list in ``dataset.json`` (organs the approved
set does not hold are unknown, not background, for training). Sets whose ApprovalStatus is not
APPROVED are left out unless ``include_unapproved``.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

from rtseg.audit.pairing import pair_folders
from rtseg.errors import DataError
from rtseg.io.archive.convert import ArchiveReport, convert_dicom_archive


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src.resolve(), dst)


def export_dataset(auto_dir: str | Path, approved_dir: str | Path, out_dir: str | Path, class_names: Sequence[str] | None,
                   aliases: Mapping[str, Sequence[str]] | None = None, include_unapproved: bool = False,
                   workers: int = 1, init_model: str | Path | None = None,
                   iterations: int = 2000) -> tuple[ArchiveReport, list[tuple[str, str]]]:
    """Convert the approved cases; returns the archive import's report and the cases left out (case, reason).

    With ``init_model`` the classes are the model's (unless given) and ``rtseg_finetune.yml`` is written
    (:mod:`rtseg.audit.finetune`)."""
    if class_names is None:
        if init_model is None:
            raise DataError("name the organ classes (--classes) or the model to fine-tune (--init-model)")
        from rtseg.inference.bundle import load_bundle

        class_names = list(load_bundle(init_model)[0].class_names)
    pairing = pair_folders(auto_dir, approved_dir)
    left_out = []
    with tempfile.TemporaryDirectory(prefix="rtseg-audit-export-") as tmp:
        stage = Path(tmp)
        n = 0
        for p in pairing.pairs:
            if p.approved.approval != "APPROVED" and not include_unapproved:
                left_out.append((p.series_uid, f"approved-side set is {p.approved.approval or 'without ApprovalStatus'}, "
                                               "not APPROVED"))
                continue
            case = stage / ("case_" + hashlib.sha256(p.series_uid.encode()).hexdigest()[:10])
            for i, f in enumerate(p.ct_files):
                _link(f, case / "ct" / f"{i:05d}.dcm")
            _link(p.approved.path, case / "rtstruct.dcm")
            n += 1
        if n == 0:
            raise DataError(f"{approved_dir}: no APPROVED structure set to export ({len(left_out)} case(s) left out)")
        report = convert_dicom_archive(stage, out_dir, class_names, aliases, workers=workers, progress=False)
    if init_model is not None and "dataset_json" in report.outputs:
        from rtseg.audit.finetune import write_finetune_config

        report.outputs["finetune_config"] = str(write_finetune_config(init_model, out_dir, report.outputs["dataset_json"],
                                                                      list(class_names), iterations))
    return report, left_out
