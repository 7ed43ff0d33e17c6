"""Training cases prepared once (reoriented, resampled, normalized) and kept in memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
from tqdm import tqdm

from rtseg.data.datasets import CaseRef, load_case
from rtseg.data.preprocess import Preprocessing, to_network_grid
from rtseg.io.volume import Volume
from rtseg.labels import IGNORE_INDEX

MAX_FG_SAMPLES = 20_000


@dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray  # (D, H, W) float32 on the network grid
    label: np.ndarray  # (D, H, W) uint8, IGNORE_INDEX where unknown
    known: np.ndarray  # (n_classes,) bool: classes contoured in this case
    spacing: tuple[float, float, float]
    fg_voxels: dict[int, np.ndarray]  # class -> (k, 3) voxel coordinates (subsampled)


def foreground_voxels(label: np.ndarray, n_classes: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    out = {}
    for c in range(1, n_classes):
        idx = np.argwhere(label == c)
        if len(idx) > MAX_FG_SAMPLES:
            idx = idx[rng.choice(len(idx), MAX_FG_SAMPLES, replace=False)]
        if len(idx):
            out[c] = idx.astype(np.int32)
    return out


def prepare_case(ref: CaseRef, img_vol: Volume, lab_vol: Volume, preprocessing: Preprocessing, n_classes: int,
                 rng: np.random.Generator, known_classes: Optional[dict[str, list[int]]] = None,
                 absent_is_unknown: bool = False) -> PreparedCase:
    """One case read from disk -> the network grid, with its known classes and foreground voxels."""
    image, info = to_network_grid(img_vol, preprocessing)
    label, _ = to_network_grid(lab_vol, preprocessing, is_label=True)
    known = np.ones(n_classes, dtype=bool)
    if known_classes is not None and ref.case_id in known_classes:
        known[:] = False
        known[known_classes[ref.case_id]] = True
    elif absent_is_unknown:
        present = np.unique(label[label != IGNORE_INDEX])
        known[:] = False
        known[0] = True
        known[present[present < n_classes]] = True
    return PreparedCase(ref.case_id, image, label, known, info.network_spacing, foreground_voxels(label, n_classes, rng))


def prepare_cases(
    refs: Iterable[CaseRef],
    preprocessing: Preprocessing,
    n_classes: int,
    known_classes: Optional[dict[str, list[int]]] = None,
    absent_is_unknown: bool = False,
    desc: str = "preparing",
) -> list[PreparedCase]:
    """Read and prepare each case (one generator draws the foreground samples of all of them, in order)."""
    rng = np.random.default_rng(0)
    refs = list(refs)
    return [prepare_case(ref, *load_case(ref, n_classes), preprocessing, n_classes, rng, known_classes, absent_is_unknown)
            for ref in tqdm(refs, desc=desc, unit="case", leave=False, disable=len(refs) < 4)]
