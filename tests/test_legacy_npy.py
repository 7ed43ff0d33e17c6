"""The legacy_npy layout's array order: every axis permutation and flip lands in (D, H, W) = (S, P, L) order."""
from __future__ import annotations

import itertools

import nibabel.orientations as nio
import numpy as np
import pytest

from rtseg.io.legacy_npy import legacy_npy_affine, read_npy, to_legacy_npy_array, write_npy
from rtseg.io.volume import Volume

SPACING = (0.7, 1.3, 2.5)  # per world axis x, y, z (mm), all different so a swapped axis shows


def _signed_permutations() -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return [(perm, signs) for perm in itertools.permutations(range(3)) for signs in itertools.product((1, -1), repeat=3)]


def _volume(perm: tuple[int, ...], signs: tuple[int, ...]) -> Volume:
    """Array axis j runs along world axis perm[j] with sign signs[j]; shapes differ per axis."""
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for j, (axis, sign) in enumerate(zip(perm, signs)):
        affine[axis, j] = sign * SPACING[axis]
    affine[:3, 3] = (-12.0, 30.0, 5.0)
    arr = np.random.default_rng(sum(perm) * 8 + len(signs)).normal(size=(4, 5, 6)).astype(np.float32)
    return Volume(arr, affine)


def _reference_nibabel(volume: Volume) -> np.ndarray:
    """The canonicaliser this module had before it called ``rtseg.io.orientation.reorient``."""
    ornt = nio.ornt_transform(nio.io_orientation(volume.affine), nio.axcodes2ornt("LPS"))
    return np.ascontiguousarray(nio.apply_orientation(volume.array, ornt).transpose(2, 1, 0))


def _reference_by_world_position(volume: Volume) -> np.ndarray:
    """Place every voxel by its world (RAS) position: D by rising z (S), H by falling y (P), W by falling x (L)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), -1).reshape(-1, 3)
    xyz = idx @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    d = np.rint((xyz[:, 2] - xyz[:, 2].min()) / SPACING[2]).astype(int)
    h = np.rint((xyz[:, 1].max() - xyz[:, 1]) / SPACING[1]).astype(int)
    w = np.rint((xyz[:, 0].max() - xyz[:, 0]) / SPACING[0]).astype(int)
    out = np.full((d.max() + 1, h.max() + 1, w.max() + 1), np.nan, np.float32)
    out[d, h, w] = volume.array.reshape(-1)
    return out


@pytest.mark.parametrize("perm,signs", _signed_permutations(), ids=lambda v: "".join(map(str, v)))
def test_every_axis_order_and_flip_lands_in_legacy_order(perm: tuple[int, ...], signs: tuple[int, ...]) -> None:
    volume = _volume(perm, signs)
    got = to_legacy_npy_array(volume)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, _reference_nibabel(volume))
    np.testing.assert_array_equal(got, _reference_by_world_position(volume))


def test_written_array_reads_back_on_its_world_grid(tmp_path) -> None:
    """legacy_npy_affine is the inverse: the read volume's voxel spacing per axis is (z, y, x) of the source."""
    volume = _volume((2, 0, 1), (-1, 1, -1))
    path = write_npy(to_legacy_npy_array(volume), tmp_path / "p01.npy")
    back = read_npy(path, spacing=(SPACING[2], SPACING[1], SPACING[0]))
    np.testing.assert_allclose(back.affine, legacy_npy_affine((SPACING[2], SPACING[1], SPACING[0])))
    assert nio.aff2axcodes(back.affine) == ("S", "P", "L")
    np.testing.assert_array_equal(back.array, _reference_by_world_position(volume))
