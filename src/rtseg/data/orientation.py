"""Canonical (RAS+) orientation by axis permutation and flips only: lossless and exactly invertible."""
from __future__ import annotations

from dataclasses import dataclass

import nibabel.orientations as nio
import numpy as np

from rtseg.io.volume import Volume


@dataclass(frozen=True)
class Reorientation:
    """How an array was permuted/flipped to RAS+; ``undo`` maps a result back onto the input grid."""

    ornt: np.ndarray  # nibabel orientation: input axis -> (output axis, flip)
    in_shape: tuple[int, int, int]

    def apply(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(nio.apply_orientation(array, self.ornt))

    def undo(self, array: np.ndarray) -> np.ndarray:
        inv = nio.ornt_transform(nio.axcodes2ornt("RAS"), self.ornt)
        out = np.ascontiguousarray(nio.apply_orientation(array, inv))
        assert out.shape[:3] == self.in_shape
        return out


def to_canonical(volume: Volume) -> tuple[Volume, Reorientation]:
    ornt = nio.io_orientation(volume.affine)
    tr = Reorientation(ornt, volume.shape)
    arr = tr.apply(volume.array)
    affine = volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)
    return Volume(arr, affine, dict(volume.meta)), tr
