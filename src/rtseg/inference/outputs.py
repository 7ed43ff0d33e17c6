"""The output formats of ``rtseg predict`` and ``rtseg serve``: one registry, read by the CLI, the pipeline and serve.

A format is a name, a help text, its file suffix (the file is ``io.naming.output_file(case, suffix)``),
whether it needs a DICOM series as input, and its writer ``(labels, volume, context, path) -> path``
(atomic, as every writer in ``io``). ``html`` has no writer here: the review writes it (it sits
above this package). Adding a format is a module with its writer plus one :func:`register_output`
line (below, for a built-in one); ``--format``, its ``--help``, the pipeline and serve's config
read the registry when they run, so a format registered later is seen too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from rtseg.errors import ConfigError
from rtseg.inference.verdict import CaseNotes
from rtseg.io.fingerprint import ModelIdentity
from rtseg.io.naming import (OVERLAY_SUFFIX, PREDICTION_SUFFIX, NIFTI_EXTENSION, REVIEW_PAGE_SUFFIX, RTSTRUCT_SUFFIX,
                             SEG_SUFFIX, output_file)
from rtseg.io.rtstruct.roi_names import load_roi_name_map, roi_names_for
from rtseg.io.volume import Volume

log = logging.getLogger("rtseg")


@dataclass(frozen=True)
class OutputContext:
    """What every writer may need besides the labels, resolved once per run (not per case)."""

    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    roi_names: tuple[str, ...]  # one per organ (labels 1..N): TG-263 or the mapping file's, checked once
    holes: str = "keyhole"
    model: Optional[ModelIdentity] = None  # the checkpoint's name and SHA-256, hashed once per run
    notes: CaseNotes = field(default_factory=CaseNotes)  # per case: the QA flags the DICOM outputs carry


Writer = Callable[[np.ndarray, Volume, OutputContext, Path], Path]


@dataclass(frozen=True)
class OutputFormat:
    """One ``--format`` choice."""

    name: str
    help: str
    suffix: str
    writer: Optional[Writer]  # None: written by the review (needs the case QA)
    dicom_only: bool = False

    def file_name(self, case: str) -> str:
        return output_file(case, self.suffix)


_FORMATS: dict[str, OutputFormat] = {}


def register_output(fmt: OutputFormat) -> OutputFormat:
    """Make ``fmt`` a choice of ``rtseg predict --format`` and of serve's ``format``."""
    output_file("case", fmt.suffix)  # a suffix that cannot make a file name fails here, not per case
    if fmt.name in _FORMATS:
        raise ValueError(f"output format {fmt.name!r} is registered twice")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister_output(name: str) -> None:
    """Remove a format (tests register toy ones)."""
    _FORMATS.pop(name, None)


def output_names() -> tuple[str, ...]:
    return tuple(_FORMATS)


def output_help() -> str:
    """``--format``'s help: every format and what it writes."""
    return ", ".join(f"{f.name} ({f.help}, CASE{f.suffix}{', DICOM input only' if f.dicom_only else ''})"
                     for f in _FORMATS.values())


def resolve_formats(names: Sequence[str], what: str = "output format(s)") -> tuple[OutputFormat, ...]:
    """The formats named, once each, in the order given; unknown or none is a ConfigError."""
    wanted = tuple(dict.fromkeys(names))
    bad = [n for n in wanted if n not in _FORMATS]
    if bad or not wanted:
        raise ConfigError(f"{what} {bad or '(none)'}: expected one or more of {', '.join(_FORMATS)}")
    return tuple(_FORMATS[n] for n in wanted)


def output_context(class_names: Sequence[str], colors: Sequence[tuple[int, int, int]],
                   roi_names: str | Path | None = None, holes: str = "keyhole",
                   model: Optional[ModelIdentity] = None) -> OutputContext:
    """The run's writer context; the ROI names are resolved here, once (a mapping naming an unknown class fails)."""
    mapping = load_roi_name_map(roi_names) if roi_names else None
    names = roi_names_for(list(class_names[1:]), mapping)
    return OutputContext(tuple(class_names), tuple(tuple(c) for c in colors), tuple(names), holes,  # type: ignore[misc]
                         model)


def refuse_dicom_outputs(formats: Sequence[OutputFormat], inputs: Sequence[tuple[str, bool]]) -> None:
    """Before any work: a DICOM output (RTSTRUCT, SEG) asked of a NIfTI input is a ConfigError naming both.
    ``inputs``: (path or name, is a DICOM series)."""
    dicom_only = [f.name for f in formats if f.dicom_only]
    niftis = [name for name, dicom in inputs if not dicom]
    if dicom_only and niftis:
        more = f" (and {len(niftis) - 1} more NIfTI input(s))" if len(niftis) > 1 else ""
        raise ConfigError(f"--format {' '.join(dicom_only)}: {'/'.join(dicom_only).upper()} references the DICOM series "
                          f"it was drawn on, and {niftis[0]}{more} is a NIfTI file; give DICOM series folders, or "
                          "other formats for NIfTI input (nifti, png, html)")


def write_outputs(formats: Sequence[OutputFormat], case: str, volume: Volume, labels: np.ndarray, ctx: OutputContext,
                  output_dir: Path, dicom_input: bool, held_dir: Optional[Path] = None) -> list[Path]:
    """Every format's file of one case (DICOM-only ones for DICOM input only); none left behind on failure.
    ``held_dir``: where the DICOM outputs (what a planning system imports) go instead, for a held case."""
    skipped = [f.name for f in formats if f.writer is not None and f.dicom_only and not dicom_input]
    if skipped:
        log.info("case %s: no %s (it needs a DICOM series as input)", case, "/".join(skipped).upper())
    written: list[Path] = []
    try:
        for f in formats:
            if f.writer is not None and (dicom_input or not f.dicom_only):
                folder = held_dir if held_dir is not None and f.dicom_only else output_dir
                written.append(f.writer(labels, volume, ctx, folder / f.file_name(case)))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written


def _nifti(labels: np.ndarray, volume: Volume, ctx: OutputContext, path: Path) -> Path:
    from rtseg.io.nifti import write_nifti

    return write_nifti(volume.with_array(labels), path, dtype=np.uint8)


def _rtstruct(labels: np.ndarray, volume: Volume, ctx: OutputContext, path: Path) -> Path:
    from rtseg.io.rtstruct.write import write_rtstruct

    return write_rtstruct(labels, volume, ctx.class_names, ctx.colors, path, ctx.roi_names, holes=ctx.holes,
                          model=ctx.model, description=ctx.notes.summary, roi_descriptions=ctx.notes.organs)


def _seg(labels: np.ndarray, volume: Volume, ctx: OutputContext, path: Path) -> Path:
    from rtseg.io.dicom.seg import write_seg

    return write_seg(labels, volume, ctx.class_names, ctx.colors, path, ctx.roi_names, model=ctx.model,
                     description=_seg_content(ctx.notes.summary), segment_descriptions=ctx.notes.organs)


def _seg_content(summary: str) -> str:
    """The SEG's ContentDescription (64 characters): how many flags, not their text (the segments carry that)."""
    if not summary:
        return ""
    head = summary.split(":")[1].strip() if summary.count(":") >= 2 else "no flags"
    return f"automatic, to be reviewed; QA: {head}"[:64]


def save_overlay(labels: np.ndarray, volume: Volume, ctx: OutputContext, path: Path) -> Path:
    """Axial montage, CT | prediction, in radiological view."""
    from rtseg.data.orientation import to_canonical
    from rtseg.figures.montage import save_montage

    can, tr = to_canonical(volume)
    zoom = 1 if max(can.shape[:2]) >= 256 else 2
    return save_montage(can.array, tr.apply(labels), None, path, ctx.colors, n_slices=4, spacing=can.spacing,
                        zoom=zoom, panel_names=("CT", "Prediction"))


register_output(OutputFormat("nifti", "labels on the input grid", PREDICTION_SUFFIX + NIFTI_EXTENSION, _nifti))
register_output(OutputFormat("rtstruct", "DICOM RT Structure Set for planning systems", RTSTRUCT_SUFFIX, _rtstruct,
                             dicom_only=True))
register_output(OutputFormat("seg", "DICOM Segmentation for PACS viewers", SEG_SUFFIX, _seg, dicom_only=True))
register_output(OutputFormat("png", "overlay montage", OVERLAY_SUFFIX, save_overlay))
register_output(OutputFormat("html", "review page per case, opens from disk, + index.html for a batch",
                             REVIEW_PAGE_SUFFIX, None))
