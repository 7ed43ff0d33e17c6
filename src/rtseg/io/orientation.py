"""Reorientation by axis permutation and flips only: lossless and exactly invertible.

The one canonicaliser: the network's RAS+ grid (``rtseg.data.orientation``) and the legacy_npy
LPS arrays (``rtseg.io.legacy_npy``) are both ``reorient(volume, axcodes)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import nibabel.orientations as nio
import numpy as np

from rtseg.io.volume import Volume

_IDENTITY = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass(frozen=True)
class Reorientation:
    """How an array was permuted/flipped; ``undo`` maps a result back onto the input grid."""

    ornt: np.ndarray  # nibabel orientation: input axis -> (output axis, flip)
    in_shape: tuple[int, int, int]

    def apply(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(nio.apply_orientation(array, self.ornt))

    def view(self, array: np.ndarray) -> np.ndarray:
        """The output-axes view (no copy) of an input-axes array: writing into it fills the input-axes array
        in place (results go back without a reoriented copy)."""
        return nio.apply_orientation(array, self.ornt)

    def undo(self, array: np.ndarray) -> np.ndarray:
        """(D, H, W) or channel-first (C, D, H, W) on the output axes -> the input axes."""
        inv = nio.ornt_transform(_IDENTITY, self.ornt)
        if array.ndim == 4:
            out = np.empty((array.shape[0],) + self.in_shape, dtype=array.dtype)
            for c in range(array.shape[0]):
                out[c] = nio.apply_orientation(array[c], inv)
            return out
        out = np.ascontiguousarray(nio.apply_orientation(array, inv))
        assert out.shape[:3] == self.in_shape
        return out

    def output_axes(self, per_input_axis: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One 1-D profile per input axis (e.g. voxel counts per slice) -> the same per output axis."""
        out: list[np.ndarray] = [np.empty(0)] * 3
        for j, (k, flip) in enumerate(self.ornt):
            out[int(k)] = per_input_axis[j][::-1] if flip < 0 else per_input_axis[j]
        return out


def reorient(volume: Volume, axcodes: str | Sequence[str] = "RAS") -> tuple[Volume, Reorientation]:
    """``volume`` with axis 0, 1, 2 running towards ``axcodes`` (no resampling) and the way back."""
    ornt = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt(tuple(axcodes)))
    tr = Reorientation(ornt, volume.shape)
    affine = volume.affine @ nio.inv_ornt_aff(ornt, volume.shape)
    return Volume(tr.apply(volume.array), affine, dict(volume.meta)), tr
