"""``rtseg predict``: checkpoint + CT (NIfTI file, DICOM series folder, or a folder of those) -> contours.

Per case: read, predict on the input grid, optionally clean up, then write
each chosen output format (``inference.outputs``: ``<case>_pred.nii.gz`` on the
input grid, ``<case>_rtstruct.dcm`` / ``<case>_seg.dcm`` for DICOM input,
``<case>_overlay.png``, ...); a ``review`` (``rtseg.review.batch``, which
sits above this package) adds QA, probabilities and review pages from the same
network run. ``rtseg serve`` contours each series through :func:`predict_case` too. A failing case is recorded in ``summary.csv`` with its error, its
partial outputs are removed, and the others go on; when every case failed on a
user error (``RtsegError``) nothing is written and that error is raised. Cases are
named by file or folder name, never by patient name/ID. A QA gate (``rtseg.review.gate``, through
:class:`~rtseg.inference.verdict.CaseGate`) decides per case whether its RTSTRUCT/SEG are delivered,
held (written under ``OUTPUT/held/``, status ``held``) or refused; every output names the model
(checkpoint file name and SHA-256, hashed once per run).
"""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Protocol, Sequence

import numpy as np
from tqdm import tqdm

from rtseg.device import resolve_device
from rtseg.errors import ConfigError, DataError, RtsegError
from rtseg.inference.bundle import InferenceBundle
from rtseg.inference.postprocess import postprocess
from rtseg.inference.ensemble import CheckpointArg, EnsemblePredictor, load_predictor, resolve_ensemble
from rtseg.inference.outputs import (OutputContext, OutputFormat, output_context, refuse_dicom_outputs, resolve_formats,
                                     write_outputs)
from rtseg.inference.verdict import DELIVER, HELD_DIR, CaseGate, Verdict
from rtseg.inference.predictor import NetworkOptions, Prediction, Predictor, plan_summary
from rtseg.inference.shard import Shard, in_case_order
from rtseg.io.atomic import atomic_path
from rtseg.io.dicom.series import looks_like_dicom
from rtseg.io.dicom.validate import check_series_extent
from rtseg.io.fingerprint import ModelIdentity, model_identity
from rtseg.io.rtstruct.contours import DEFAULT_HOLE_ENCODING
from rtseg.io.naming import image_case_id, is_label_file
from rtseg.io.integrity import NonFinitePolicy
from rtseg.io.nifti import is_nifti, read_nifti
from rtseg.io.volume import Volume

log = logging.getLogger("rtseg")

SUMMARY_NAME = "summary.csv"


@dataclass(frozen=True)
class CaseInput:
    name: str
    path: Path
    kind: Literal["nifti", "dicom"]


@dataclass
class CaseResult:
    case: str
    status: Literal["ok", "held", "failed"]
    seconds: float
    error: str = ""
    outputs: list[Path] = field(default_factory=list)
    user_error: bool = False  # failed on an RtsegError (bad input), not a bug
    gate: str = ""  # the QA gate's action (``deliver``, ``deliver with flags``, ``hold``, ``refuse``)


class CaseReview(Protocol):
    """What a review (``rtseg.review.batch.BatchReview``) does around each case and at the end."""

    def before(self, case: str, volume: Volume) -> None: ...
    def assess(self, case: str, volume: Volume, prediction: Prediction, labels: np.ndarray) -> dict[str, Any]: ...
    def after(self, case: str, volume: Volume, prediction: Prediction, labels: np.ndarray,
              output_dir: Path) -> list[Path]: ...
    def columns(self, case: str) -> dict[str, Any]: ...
    def order(self, cases: Sequence[str]) -> list[str]: ...
    def finish(self, output_dir: Path, n_cases: int) -> list[Path]: ...
    def export(self) -> dict[str, Any]: ...
    def merge(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class PredictOptions:
    """Everything a predict run is asked for, as one object: the CLI (or serve's config) builds it once."""

    formats: tuple[str, ...] = ("nifti",)
    device: str = "auto"
    network: NetworkOptions = field(default_factory=NetworkOptions)
    largest_component: bool = False
    fill_holes: bool = False
    holes: str = DEFAULT_HOLE_ENCODING
    roi_names: Optional[str | Path] = None  # mapping file class -> ROI name
    nonfinite: NonFinitePolicy = "error"


@dataclass(frozen=True)
class CaseOutputs:
    """What is written per case, resolved once per run from the options and the checkpoint."""

    formats: tuple[OutputFormat, ...]
    context: OutputContext
    options: PredictOptions

    @classmethod
    def resolve(cls, options: PredictOptions, bundle: InferenceBundle, review: bool,
                model: Optional[ModelIdentity] = None) -> "CaseOutputs":
        """Formats checked against the registry, ROI names resolved (both fail here, before any case)."""
        formats = check_formats(options.formats, review)
        ctx = output_context(bundle.class_names, bundle.colors, options.roi_names, options.holes, model)
        return cls(formats, ctx, options)

    def delivers(self, case: CaseInput) -> bool:
        """Whether the case gets an output a planning system imports (RTSTRUCT, SEG): what the QA gate holds."""
        return case.kind == "dicom" and any(f.dicom_only for f in self.formats)


def check_formats(names: Sequence[str], review: bool) -> tuple[OutputFormat, ...]:
    """The registered formats named; those the review writes (html) need a review."""
    formats = resolve_formats(names)
    by_review = [f.name for f in formats if f.writer is None]
    if by_review and not review:
        raise ConfigError(f"output format {', '.join(by_review)} needs the case QA (it is the review page)")
    return formats


@dataclass
class CaseRun:
    """One case's files and where its time went (``rtseg serve`` keeps the timings)."""

    outputs: list[Path]
    seconds: dict[str, float]
    verdict: Verdict = DELIVER
    qa: Optional[dict[str, Any]] = None


@dataclass
class PredictReport:
    results: list[CaseResult]
    summary_csv: Path

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def held(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "held"]


def _holds_dicom(folder: Path) -> bool:
    """Whether a sub-folder can be a series: one of its files looks like DICOM (extension or DICM marker)."""
    return any(f.is_file() and not f.name.startswith(".") and looks_like_dicom(f) for f in folder.iterdir())


def find_cases(input_path: str | Path, exclude: Optional[Path] = None) -> list[CaseInput]:
    """One NIfTI file; a DICOM series folder (files only, none NIfTI); or a folder of NIfTI files and/or
    series sub-folders, other files ignored (hidden entries and ``exclude``, e.g. the output folder, skipped)."""
    p = Path(input_path)
    if not p.exists():
        raise DataError(f"{p}: input not found")
    if p.is_file():
        if is_nifti(p):
            return [CaseInput(image_case_id(p), p, "nifti")]
        raise DataError(f"{p}: expected a NIfTI file (.nii, .nii.gz), a DICOM series folder or a folder of those")
    entries = [e for e in sorted(p.iterdir()) if not e.name.startswith(".")]
    if exclude is not None:
        entries = [e for e in entries if e.resolve() != exclude.resolve()]
    files = [e for e in entries if e.is_file()]
    dirs = [e for e in entries if e.is_dir()]
    not_series = [d for d in dirs if not _holds_dicom(d)]  # e.g. a converted dataset's curation/ pages
    if not_series:
        log.info("%s: %d sub-folder(s) without DICOM files skipped (%s)", p, len(not_series), not_series[0].name)
        dirs = [d for d in dirs if d not in not_series]
    niftis = [e for e in files if is_nifti(e)]
    if files and not niftis and not dirs:
        return [CaseInput(p.resolve().name, p, "dicom")]
    labels = [e for e in niftis if is_label_file(e)]  # ground truth or earlier predictions, not CTs
    if labels:
        log.info("%s: %d label/prediction file(s) skipped (%s)", p, len(labels), labels[0].name)
    cases = [CaseInput(image_case_id(e), e, "nifti") for e in niftis if e not in labels]
    cases += [CaseInput(e.name, e, "dicom") for e in dirs]
    if not cases:
        raise DataError(f"{p}: no NIfTI files or DICOM series folders found")
    seen: dict[str, int] = {}
    unique = []
    for c in cases:
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        unique.append(c if n == 0 else CaseInput(f"{c.name}_{n + 1}", c.path, c.kind))
    return unique


def read_case(case: CaseInput, nonfinite: NonFinitePolicy = "error") -> Volume:
    """The case's CT; NaN/inf voxels of a NIfTI are an error unless ``nonfinite`` gives their value."""
    if case.kind == "nifti":
        return read_nifti(case.path, nonfinite=nonfinite)
    from rtseg.io.dicom.series import read_dicom_series

    return read_dicom_series(case.path)


def predict_case(predictor: Predictor | EnsemblePredictor, case: CaseInput, output_dir: Path, outputs: CaseOutputs,
                 review: Optional[CaseReview] = None, gate: Optional[CaseGate] = None) -> CaseRun:
    """Outputs of one case; on failure none of them is left behind. With a ``gate``: a refused case raises
    ``DataError``; a held one's DICOM outputs go to ``output_dir/held/`` (the caller reports it held)."""
    opts = outputs.options
    t0 = time.perf_counter()
    volume = read_case(case, opts.nonfinite)
    check_series_extent(volume.shape, str(case.path))  # 1 or 2 slices: refused before the network runs
    t1 = time.perf_counter()
    prediction: Optional[Prediction] = None
    if review is not None:
        review.before(case.name, volume)
        prediction = predictor.predict_full(volume)
        labels = prediction.labels
    else:
        labels = predictor.predict_labels(volume)
    log.debug("case %s: %s", case.name, plan_summary(predictor.stats))
    labels = postprocess(labels, largest_component=opts.largest_component, fill=opts.fill_holes)
    t2 = time.perf_counter()
    qa = review.assess(case.name, volume, prediction, labels) if review is not None and prediction is not None else None
    verdict = gate(case.name, volume, qa) if gate is not None else DELIVER
    if verdict.refused:
        raise DataError(f"refused by the QA gate ({verdict.policy}): {'; '.join(verdict.reasons)}")
    ctx = replace(outputs.context, notes=verdict.notes)
    if qa is not None:  # qa.json names the model and the gate's decision
        qa.update(model=ctx.model.to_dict() if ctx.model is not None else None, gate=verdict.to_dict())
    held = output_dir / HELD_DIR if verdict.held and outputs.delivers(case) else None
    written = write_outputs(outputs.formats, case.name, volume, labels, ctx, output_dir,
                            dicom_input=case.kind == "dicom", held_dir=held)
    try:
        if review is not None and prediction is not None:
            written.extend(review.after(case.name, volume, prediction, labels, output_dir))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return CaseRun(written, {"read": t1 - t0, "inference": t2 - t1, "write": time.perf_counter() - t2}, verdict, qa)


def write_summary(results: Sequence[CaseResult], path: Path, review: Optional[CaseReview] = None,
                  model: Optional[ModelIdentity] = None) -> Path:
    """One row per case (with the model: checkpoint name and SHA-256, and the QA gate's action); with a review,
    its QA columns too and the cases to look at first on top."""
    rows = list(results)
    extra: list[str] = []
    if review is not None:
        by_name = {r.case: r for r in rows}
        rows = [by_name[c] for c in review.order([r.case for r in rows])]
        extra = list(review.columns(rows[0].case)) if rows else []
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["case", "status", "seconds", "error", "model", "qa_gate", *extra])
            for r in rows:
                cols = review.columns(r.case) if review is not None else {}
                w.writerow([r.case, r.status, f"{r.seconds:.2f}", r.error, str(model) if model else "", r.gate,
                            *[cols[k] for k in extra]])
    return path


def _run_case(predictor: Predictor | EnsemblePredictor, case: CaseInput, out: Path, opts: CaseOutputs,
              review: Optional[CaseReview], gate: Optional[CaseGate] = None) -> CaseResult:
    """One case, its failure recorded instead of raised: one bad case must not stop a batch."""
    t0 = time.perf_counter()
    try:
        run = predict_case(predictor, case, out, opts, review, gate)
        outputs = run.outputs
    except RtsegError as exc:
        log.error("case %s failed: %s", case.name, exc)
        return CaseResult(case.name, "failed", time.perf_counter() - t0, str(exc), user_error=True)
    except Exception as exc:  # the traceback goes to debug logs
        msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        log.error("case %s failed: %s", case.name, msg)
        log.debug("case %s traceback", case.name, exc_info=True)
        return CaseResult(case.name, "failed", time.perf_counter() - t0, msg)
    dt = time.perf_counter() - t0
    log.info("case %s: %.1f s, %s", case.name, dt, ", ".join(p.name for p in outputs) or "no output")
    if run.verdict.held and opts.delivers(case):
        why = "; ".join(run.verdict.reasons)
        log.warning("case %s held by the QA gate: %s; its DICOM outputs are in %s/", case.name, why, out / HELD_DIR)
        return CaseResult(case.name, "held", dt, f"held by the QA gate: {why}", outputs, gate=run.verdict.action)
    return CaseResult(case.name, "ok", dt, "", outputs, gate=run.verdict.action if gate is not None else "")


def predict_path(checkpoint: CheckpointArg, input: str | Path, output_dir: str | Path,
                 options: PredictOptions = PredictOptions(),
                 review: Optional[Callable[[InferenceBundle], CaseReview]] = None,
                 gate: Optional[Callable[[InferenceBundle], CaseGate]] = None) -> PredictReport:
    """Predict every case under ``input``; the caller exits non-zero if ``report.failed`` or ``report.held``.

    ``review`` builds the run's review from the checkpoint's bundle (``rtseg.review.batch.BatchReview``),
    ``gate`` its QA gate (``rtseg.review.gate.QaGate``). A DICOM output asked of a NIfTI input is refused
    before the checkpoint is read.

    Raises the (first) user error when every case failed on one, leaving no output behind."""
    formats = check_formats(options.formats, review is not None)  # before any case is looked for
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: output must be a folder, found a file")
    cases = find_cases(input, exclude=out)
    refuse_dicom_outputs(formats, [(str(c.path), c.kind == "dicom") for c in cases])
    shard = Shard.from_env()  # torchrun: this rank contours every N-th case
    try:
        dev = shard.device(resolve_device(options.device))
        ensemble = resolve_ensemble(checkpoint)
        model = model_identity(ensemble.members, ensemble.source)  # hashed once per run
        predictor = load_predictor(checkpoint, dev, options.network,
                                   progress=len(cases) == 1)  # one checkpoint, several, or an ensemble file / CV folder
        outputs = CaseOutputs.resolve(options, predictor.bundle, review is not None, model)
        reviewer = None if review is None else review(predictor.bundle)
        case_gate = None if gate is None else gate(predictor.bundle)
        log.info("predicting %d case(s) on %s with %s (%s)%s", len(cases), dev, ensemble.source, model,
                 f" (rank {shard.rank} of {shard.world_size})" if shard.enabled else "")
        return _run_batch(predictor, cases, out, outputs, reviewer, shard, case_gate)
    finally:
        shard.close()


def _run_batch(predictor: Predictor | EnsemblePredictor, cases: Sequence[CaseInput], out: Path, opts: CaseOutputs,
               reviewer: Optional[CaseReview], shard: Shard, gate: Optional[CaseGate] = None) -> PredictReport:
    """This rank's cases, then every rank's results in input order; rank 0 writes the summary and index."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    mine = shard.take(cases)
    own = [_run_case(predictor, case, out, opts, reviewer, gate)
           for case in tqdm(mine, desc="predict", unit="case", disable=None if shard.is_main else True)]
    parts = shard.gather((own, reviewer.export() if reviewer is not None else None))
    results = in_case_order([p[0] for p in parts], [c.name for c in cases])
    if reviewer is not None and shard.enabled:
        for _, state in parts:
            reviewer.merge(state)
    summary = out / SUMMARY_NAME
    if all(r.user_error for r in results):
        if shard.is_main and created and not any(out.iterdir()):
            out.rmdir()
        first = results[0].error
        raise DataError(first if len(results) == 1 else f"every case failed; case {results[0].case}: {first}")
    if shard.is_main:
        if reviewer is not None:
            for p in reviewer.finish(out, len(cases)):
                log.info("batch index: %s", p)
        write_summary(results, summary, reviewer, opts.context.model)
    return PredictReport(results, summary)
