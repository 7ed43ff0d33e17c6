"""The review of an adapted fraction: ``rtseg predict``'s QA and page, plus what adapt knows.

The case QA (``review.qa.case_qa``) gets an ``adapt`` section (method, registration similarity and
Jacobian, the per-organ agreement between the patient model and the propagated contours), a case flag
per doubt about the registration ("... similarity 0.66 < 0.70 (is this fraction the same patient?)") and one
flag per organ where the methods disagree. The review page's second row shows the planning contours
(rigidly registered onto the fraction) beside the fraction's, with the per-organ change between them ("Bladder: methods disagree by N mm: check this organ"), so the flag shows
in qa.json, summary.csv and the review page's table like every other flag.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from rtseg.inference.bundle import InferenceBundle
from rtseg.inference.predictor import Prediction
from rtseg.io.volume import Volume
from rtseg.review.batch import BatchReview
from rtseg.review.gate import REGISTRATION

AGREEMENT_WEIGHT = 2
REGISTRATION_WEIGHT = 3
PLAN_ROW = "Planning contours (rigidly registered to this fraction)"


def add_adapt_section(qa: dict[str, Any], adapt: dict[str, Any]) -> dict[str, Any]:
    """``qa`` with the adapt section and the disagreement flags (in the organ rows and the flag list)."""
    qa["adapt"] = {k: v for k, v in adapt.items() if k != "labels"}
    for text in adapt.get("problems", []):  # doubtful registration: the whole case, like an input flag
        qa["flags"].append({"organ": None, "rule": REGISTRATION, "weight": REGISTRATION_WEIGHT, "text": text})
    rows = {r["organ"]: r for r in qa.get("organs", [])}
    for row in adapt.get("agreement", []):
        if not row.get("check"):
            continue
        flag = {"organ": row["organ"], "rule": "methods_disagree", "weight": AGREEMENT_WEIGHT, "text": row["text"]}
        qa["flags"].append(flag)
        if row["organ"] in rows:
            rows[row["organ"]].setdefault("flags", []).append(flag)
    qa["n_flags"] = len(qa["flags"])
    qa["flag_weight"] = sum(f["weight"] for f in qa["flags"])
    return qa


class AdaptReview(BatchReview):
    """``BatchReview`` whose QA carries ``last()`` (the adapt predictor's facts for the case just contoured)."""

    def __init__(self, bundle: InferenceBundle, last: Callable[[], dict[str, Any]], html: bool = False) -> None:
        super().__init__(bundle, html=html)
        self.last = last

    def assess(self, case: str, volume: Volume, prediction: Prediction, labels: np.ndarray) -> dict[str, Any]:
        """``rtseg predict``'s QA + the adapt section: what the QA gate judges (a doubtful registration is held)."""
        qa = add_adapt_section(super().assess(case, volume, prediction, labels), self.last())
        self._pending = {case: qa}
        return qa

    def page_rows(self, case: str, qa: dict[str, Any], gt: Optional[np.ndarray]) -> tuple[str, Optional[np.ndarray], str]:
        """The fraction's page: its method in the title, the planning contours (rigidly registered) as second row."""
        plan = (self.last().get("labels") or {}).get("rigid")  # the plan's contours on this fraction
        return f"{case} (adapt: {qa['adapt'].get('method', '?')})", plan, PLAN_ROW
