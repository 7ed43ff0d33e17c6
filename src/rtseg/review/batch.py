"""What ``rtseg predict`` adds for review, per case and per batch: qa.json, probabilities, review pages, index.

``rtseg.inference.pipeline`` runs the cases and calls a :class:`BatchReview` (it sits above
inference, so the pipeline only knows its methods): the input checks before contouring, then the
case's QA from the one network run's probabilities (and, with TTA, each mirrored pass's labels),
then the batch's summary columns, order and index page. The training statistics come from the
checkpoint (``plan["organ_stats"]``); an older checkpoint gets QA without training comparisons.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from rtseg.errors import ConfigError
from rtseg.inference.bundle import InferenceBundle
from rtseg.inference.predictor import Prediction
from rtseg.io.jsonfile import write_json
from rtseg.io.naming import review_files
from rtseg.io.nifti import write_nifti_channels
from rtseg.io.volume import Volume
from rtseg.review.index import batch_index
from rtseg.review.measures import input_facts
from rtseg.review.organ_stats import check_stats
from rtseg.review.page import DEFAULT_CT_BUDGET, review_page, write_page
from rtseg.review.probabilities import StoredDtype, store_probabilities
from rtseg.review.qa import case_qa, input_flags, sort_cases, summary_columns

log = logging.getLogger("rtseg")

PROBABILITY_DTYPES: tuple[str, ...] = ("uint8", "uint16")  # NIfTI-1 has no float16
QA_COLUMNS: tuple[str, ...] = ("n_flags", "flag_weight", "flags")
INDEX_NAME = "index.html"


class BatchReview:
    """QA (always), probabilities (``save_probabilities``: uint8 or float16) and review pages (``html``)."""

    def __init__(self, bundle: InferenceBundle, html: bool = False, save_probabilities: Optional[StoredDtype] = None,
                 ct_budget_bytes: int = DEFAULT_CT_BUDGET) -> None:
        if save_probabilities is not None and save_probabilities not in PROBABILITY_DTYPES:
            raise ConfigError(f"--save-probabilities {save_probabilities!r}: expected one of {', '.join(PROBABILITY_DTYPES)}")
        self.class_names = list(bundle.class_names)
        self.colors = [tuple(c) for c in bundle.colors]
        self.html = html
        self.save_probabilities = save_probabilities
        self.temperature = bundle.temperature  # the Predictor applies the same one
        self.ct_budget_bytes = ct_budget_bytes
        raw = bundle.organ_stats
        self.stats = None if raw is None else check_stats(raw, "checkpoint plan.organ_stats")
        self.qas: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, dict[str, Any]] = {}  # assessed, not yet written
        if self.stats is None:
            log.warning("QA without training comparisons: the checkpoint holds no organ statistics "
                     "(trained before rtseg recorded them); volume, position and input checks are skipped")
        if self.temperature != 1.0:
            log.info("probabilities use the checkpoint's calibrated temperature %.3g", self.temperature)

    def before(self, case: str, volume: Volume) -> None:
        """Input checks against the training CTs, logged before the network runs."""
        if self.stats is None:
            return
        for flag in input_flags(input_facts(volume.array, volume.affine), self.stats):
            log.warning("case %s: %s", case, flag["text"])

    def assess(self, case: str, volume: Volume, prediction: Prediction, labels: np.ndarray) -> dict[str, Any]:
        """The case's QA (what the QA gate judges and qa.json holds), kept until :meth:`after` writes it."""
        qa = case_qa(labels, volume.affine, self.class_names, ct=volume.array, stats=self.stats,
                     probabilities=prediction.probabilities, tta_labels=prediction.pass_labels, case=case,
                     network_labels=prediction.labels if prediction.labels_are_argmax else None)
        qa["temperature"] = self.temperature
        self._pending = {case: qa}  # one case at a time: a case that failed after its QA leaves nothing behind
        return qa

    def after(self, case: str, volume: Volume, prediction: Prediction, labels: np.ndarray, output_dir: Path,
              gt: Optional[np.ndarray] = None) -> list[Path]:
        """The case's qa.json (its :meth:`assess`, made here if not yet; + probabilities, + page: with ``gt`` its
        second row and metrics table); on failure nothing of them is left behind."""
        qa = self._pending.pop(case, None) or self.assess(case, volume, prediction, labels)
        self._pending.clear()
        qa_name, prob_name, page_name = review_files(case)
        written: list[Path] = []
        try:
            written.append(write_json(qa, output_dir / qa_name))
            if self.save_probabilities is not None:
                arr, slope = store_probabilities(prediction.probabilities, self.save_probabilities)
                written.append(write_nifti_channels(arr, volume.affine, output_dir / prob_name, slope,
                                                    "rtseg probabilities: " + ",".join(self.class_names)))
            if self.html:
                title, second, second_title = self.page_rows(case, qa, gt)
                page = review_page(volume.array, labels, volume.affine, self.class_names, self.colors, gt=second, qa=qa,
                                   title=title, gt_title=second_title, ct_budget_bytes=self.ct_budget_bytes)
                written.append(write_page(page, output_dir / page_name))
        except BaseException:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        self.qas[case] = qa
        return written

    def page_rows(self, case: str, qa: dict[str, Any], gt: Optional[np.ndarray]) -> tuple[str, Optional[np.ndarray], str]:
        """The review page's title and its second row (labels, row title): the ground truth where given."""
        return case, gt, "Ground truth"

    def columns(self, case: str) -> dict[str, Any]:
        """The case's QA columns of summary.csv (empty for a failed case)."""
        qa = self.qas.get(case)
        return summary_columns(qa) if qa is not None else {k: "" for k in QA_COLUMNS}

    def order(self, cases: Sequence[str]) -> list[str]:
        """Cases to review first: failed ones (no QA), then by flags (``sort_cases``)."""
        done = [str(q["case"]) for q in sort_cases([self.qas[c] for c in cases if c in self.qas])]
        return [c for c in cases if c not in self.qas] + done

    def export(self) -> dict[str, Any]:
        """What another predict rank needs of this one's cases for the batch's summary and index: their QA."""
        return {"qas": self.qas}

    def merge(self, state: dict[str, Any]) -> None:
        """Take in another rank's :meth:`export` (torchrun batch prediction; rank 0 writes summary and index)."""
        self.qas.update(state["qas"])

    def finish(self, output_dir: Path, n_cases: int) -> list[Path]:
        """The batch's index page (``html`` and more than one case)."""
        if not self.html or n_cases < 2 or not self.qas:
            return []
        qas = list(self.qas.values())
        return [write_page(batch_index(qas, {c: review_files(c)[2] for c in self.qas}), output_dir / INDEX_NAME)]
