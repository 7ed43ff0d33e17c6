"""Random patches with foreground oversampling; parameters drawn from an index-seeded RNG so any
sample can be replayed exactly (and workers need no shared random state)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from rtseg.labels import IGNORE_INDEX
from rtseg.data.cases import PreparedCase


@dataclass(frozen=True)
class PatchParams:
    """Everything random about one sample: replayable."""

    case: int
    start: tuple[int, int, int]  # may be negative / beyond the edge: padded
    aug_seed: int


def class_index(cases: Sequence[PreparedCase]) -> dict[int, list[int]]:
    """class -> the cases that contour it and have voxels of it: class-balanced sampling draws from these."""
    index: dict[int, list[int]] = {}
    for ci, case in enumerate(cases):
        for cls, vox in case.fg_voxels.items():
            if case.known[cls] and len(vox):
                index.setdefault(int(cls), []).append(ci)
    return dict(sorted(index.items()))


def sample_params(rng: np.random.Generator, cases: Sequence[PreparedCase], patch: tuple[int, int, int], fg_oversample: float,
                  by_class: Optional[dict[int, list[int]]] = None) -> PatchParams:
    """A random case and patch start; with probability ``fg_oversample`` centred near an organ voxel.

    ``by_class`` (from :func:`class_index`) makes the organ draw class-balanced: an organ first, uniformly,
    then a case contouring it, so an organ only a third of the patients contour (OpenKBP's esophagus) is
    centred as often as one every patient has. Without it a case is drawn first, then one of its organs.
    """
    if by_class and rng.random() < fg_oversample:
        classes = list(by_class)
        cls = classes[int(rng.integers(len(classes)))]
        ci = by_class[cls][int(rng.integers(len(by_class[cls])))]
        return _around(rng, ci, cases[ci], cls, patch)
    ci = int(rng.integers(len(cases)))
    case = cases[ci]
    shape = np.array(case.image.shape)
    p = np.array(patch)
    known_fg = [c for c in case.fg_voxels if case.known[c]]
    if by_class is None and known_fg and rng.random() < fg_oversample:
        return _around(rng, ci, case, known_fg[int(rng.integers(len(known_fg)))], patch)
    hi = np.maximum(shape - p, 0)
    start = np.array([int(rng.integers(h + 1)) for h in hi]) + np.minimum(0, (shape - p) // 2)
    return PatchParams(ci, tuple(int(s) for s in start), int(rng.integers(2**31 - 1)))  # type: ignore[arg-type]


def _around(rng: np.random.Generator, ci: int, case: PreparedCase, cls: int, patch: tuple[int, int, int]) -> PatchParams:
    """A patch containing a random voxel of class ``cls``, jittered by up to a quarter patch."""
    shape, p = np.array(case.image.shape), np.array(patch)
    vox = case.fg_voxels[cls]
    centre = vox[int(rng.integers(len(vox)))]
    start = centre - p // 2 + rng.integers(-(p // 4), p // 4 + 1)
    start = np.clip(start, np.minimum(0, shape - p), np.maximum(0, shape - p))
    return PatchParams(ci, tuple(int(s) for s in start), int(rng.integers(2**31 - 1)))  # type: ignore[arg-type]


def crop(array: np.ndarray, start: tuple[int, int, int], patch: tuple[int, int, int], fill: float) -> np.ndarray:
    """Crop with constant padding where the patch leaves the volume."""
    out = np.full(patch, fill, dtype=array.dtype)
    src, dst = [], []
    for s, n, size in zip(start, patch, array.shape):
        a, b = max(s, 0), min(s + n, size)
        src.append(slice(a, b))
        dst.append(slice(a - s, b - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


class PatchDataset(Dataset):
    """Map-style: item ``i`` is always the same sample for a given seed."""

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        patch_size: tuple[int, int, int],
        fg_oversample: float,
        length: int,
        seed: int = 0,
        augment: Optional[Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]] = None,
        class_balanced: bool = False,
    ) -> None:
        if not cases:
            raise ValueError("PatchDataset needs at least one case")
        self.cases = list(cases)
        self.patch = tuple(patch_size)
        self.fg = fg_oversample
        self.length = length
        self.seed = seed
        self.augment = augment
        self.by_class = class_index(self.cases) if class_balanced else None
        self.pad_values = [float(c.image.min()) for c in self.cases]

    def __len__(self) -> int:
        return self.length

    def params(self, index: int) -> PatchParams:
        return sample_params(np.random.default_rng([self.seed, index]), self.cases, self.patch, self.fg,  # type: ignore[arg-type]
                             self.by_class)

    def __getitem__(self, index: int) -> dict[str, Any]:
        prm = self.params(index)
        case = self.cases[prm.case]
        img = crop(case.image, prm.start, self.patch, self.pad_values[prm.case])  # type: ignore[arg-type]
        lab = crop(case.label, prm.start, self.patch, IGNORE_INDEX)  # type: ignore[arg-type]
        sample = {"image": torch.from_numpy(img)[None], "label": torch.from_numpy(lab.astype(np.int64))[None]}
        if self.augment is not None:
            sample = self.augment(sample, prm.aug_seed)
        return {"image": sample["image"].float(), "label": sample["label"][0].long(), "known": torch.from_numpy(case.known.copy()),
                "case_id": case.case_id}  # so a bad batch can be named
