"""One survey of the training data per run: each training case is read once at start-up.

Planning (spacing, shapes, intensities, class counts), the dataset normalization and the
organ statistics of the review QA all come from :class:`Survey`. The read that surveys a
case also hands it to ``on_case`` (preparing it for training, or holding it until the grid is
decided), so nothing reads a training file a second time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from rtseg.data.datasets import CaseRef, load_case
from rtseg.data.orientation import to_canonical
from rtseg.errors import DataError
from rtseg.io.volume import Volume
from rtseg.labels import IGNORE_INDEX

# Foreground intensities kept per case for the dataset statistics (nnU-Net keeps a sample too).
MAX_INTENSITY_SAMPLES = 100_000

CaseMeasure = Callable[[CaseRef, Volume, Volume], Any]
"""An extra per-case measurement made on the case as stored (e.g. the review's organ facts)."""
CaseSink = Callable[[CaseRef, Volume, Volume], None]
"""Receives each case right after it is read (``prepare`` it, or keep it for later)."""


@dataclass(frozen=True)
class CaseSurvey:
    """What the survey keeps of one training case (canonical axes, as stored otherwise)."""

    case_id: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    class_voxels: np.ndarray  # (n_classes,) voxel count per class, unknown voxels not counted
    foreground: np.ndarray  # float64 sample of the HU values inside organs
    measure: Any = None


@dataclass
class Survey:
    """The training split as a whole: per-case records in the split's order."""

    n_classes: int
    cases: list[CaseSurvey] = field(default_factory=list)

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def shapes(self) -> np.ndarray:
        return np.array([c.shape for c in self.cases], dtype=np.int64)

    def class_voxels(self) -> np.ndarray:
        total = np.zeros(self.n_classes, dtype=np.int64)
        for c in self.cases:
            total += c.class_voxels
        return total

    def measures(self) -> list[Any]:
        return [c.measure for c in self.cases]

    def intensity_statistics(self, window: tuple[float, float]) -> tuple[float, float, tuple[float, float]]:
        """nnU-Net-style CT statistics of foreground voxels: mean, std and the 0.5/99.5 percentiles (clipped to
        ``window``)."""
        samples = [c.foreground for c in self.cases if c.foreground.size]
        if not samples:
            raise DataError("cannot compute dataset intensity statistics: no foreground voxels in the training labels")
        v = np.concatenate(samples)
        p_lo, p_hi = np.percentile(v, [0.5, 99.5])
        lo, hi = max(window[0], float(p_lo)), min(window[1], float(p_hi))
        if lo >= hi:
            lo, hi = float(p_lo), float(p_hi) + 1e-3
        v = np.clip(v, lo, hi)
        return float(v.mean()), float(v.std() or 1.0), (lo, hi)


def survey_case(ref: CaseRef, image: Volume, label: Volume, n_classes: int, rng: np.random.Generator,
                measure: Optional[CaseMeasure] = None) -> CaseSurvey:
    """One case's record; ``rng`` draws the intensity sample (one generator over the split keeps it repeatable)."""
    img, _ = to_canonical(image)
    lab, _ = to_canonical(label)
    labels = lab.array
    valid = labels[labels < n_classes]
    counts = np.bincount(valid.ravel(), minlength=n_classes)[:n_classes].astype(np.int64)
    fg = img.array[(labels > 0) & (labels != IGNORE_INDEX)]
    if fg.size > MAX_INTENSITY_SAMPLES:
        fg = rng.choice(fg, MAX_INTENSITY_SAMPLES, replace=False)
    return CaseSurvey(ref.case_id, tuple(float(s) for s in img.spacing), tuple(int(s) for s in img.shape),  # type: ignore[arg-type]
                      counts, fg.astype(np.float64), measure(ref, image, label) if measure else None)


def survey_cases(refs: Sequence[CaseRef], n_classes: int, measure: Optional[CaseMeasure] = None,
                 on_case: Optional[CaseSink] = None, desc: str = "reading training cases") -> Survey:
    """Read each case once: record it, measure it, and hand it to ``on_case``."""
    if not refs:
        raise DataError("cannot survey the training data: the training split has no cases")
    survey = Survey(n_classes)
    rng = np.random.default_rng(0)
    for ref in tqdm(refs, desc=desc, unit="case", leave=False, disable=len(refs) < 4):
        image, label = load_case(ref, n_classes)
        survey.cases.append(survey_case(ref, image, label, n_classes, rng, measure))
        if on_case is not None:
            on_case(ref, image, label)
    return survey
