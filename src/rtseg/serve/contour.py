"""The node's only door into inference: checkpoint -> model loaded once; series folder -> the rule's outputs.

A series goes through ``rtseg predict``'s own case pipeline (``inference.pipeline.predict_case``) with
predict's defaults and the rule's output formats (``inference.outputs``: RTSTRUCT by default, SEG, ...)
and ROI names, so the node's RTSTRUCT is the one ``rtseg predict --format rtstruct`` writes for the
same series, and the contour QA ``rtseg predict`` computes (``CASE_qa.json``) comes with it, judged by
the same QA gate (``review.gate``: the node's ``qa_policy``). The checkpoint is hashed once, at load.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from rtseg.device import resolve_device
from rtseg.inference.ensemble import load_predictor, resolve_ensemble
from rtseg.inference.pipeline import CaseInput, CaseOutputs, PredictOptions, predict_case
from rtseg.inference.predictor import NetworkOptions
from rtseg.inference.verdict import Verdict
from rtseg.io.fingerprint import model_identity
from rtseg.review.batch import BatchReview
from rtseg.review.gate import DEFAULT_POLICY, QaGate
from rtseg.review.qa import summary_columns


@dataclass
class Contoured:
    """One series' output files (outputs first, then qa.json), seconds per step, its QA summary and the gate's verdict."""

    outputs: list[Path]
    seconds: dict[str, float]
    qa: dict[str, Any]
    verdict: Verdict
    model: str


class Contourer:
    """One loaded model (per worker: a Predictor is not shared between threads) and the outputs its rules ask for."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", precision: str = "auto") -> None:
        self.device = resolve_device(device)
        self.checkpoint = Path(checkpoint)
        ensemble = resolve_ensemble(checkpoint)
        self.model = model_identity(ensemble.members, ensemble.source)
        self.network = NetworkOptions(precision=precision)
        # a checkpoint, or an ensemble file / CV folder
        self.predictor = load_predictor(checkpoint, self.device, self.network)
        self._plans: dict[tuple[tuple[str, ...], Optional[str], str], tuple[CaseOutputs, BatchReview, QaGate]] = {}

    def prepare(self, formats: Sequence[str], roi_names: Optional[str] = None,
                qa_policy: str = DEFAULT_POLICY) -> tuple[CaseOutputs, BatchReview, QaGate]:
        """What a rule's series get, resolved once (unknown formats or ROI mapping classes fail here)."""
        key = (tuple(formats), roi_names, qa_policy)
        if key not in self._plans:
            options = PredictOptions(formats=key[0], device=str(self.device), network=self.network, roi_names=roi_names)
            bundle = self.predictor.bundle
            outputs = CaseOutputs.resolve(options, bundle, review=True, model=self.model)
            review = BatchReview(bundle, html=any(f.writer is None for f in outputs.formats))
            self._plans[key] = (outputs, review, QaGate(bundle, qa_policy))
        return self._plans[key]

    def contour(self, series_dir: Path, out_dir: Path, name: str, formats: Sequence[str] = ("rtstruct",),
                roi_names: Optional[str] = None, qa_policy: str = DEFAULT_POLICY) -> Contoured:
        """Read the series (the DICOM reader's checks apply), predict, write ``<name><suffix>`` per format
        and ``<name>_qa.json`` into ``out_dir``, atomically; the QA gate's verdict comes back (a refused series
        raises ``DataError``)."""
        outputs, review, gate = self.prepare(formats, roi_names, qa_policy)
        run = predict_case(self.predictor, CaseInput(name, series_dir, "dicom"), out_dir, outputs, review, gate)
        qa = review.qas.pop(name)  # the node runs for months: keep no QA of past series
        return Contoured(run.outputs, run.seconds, summary_columns(qa), run.verdict, str(self.model))
