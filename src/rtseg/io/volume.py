"""The data model every layer above ``io`` sees: an array that knows its geometry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Volume:
    """A 3D array plus the affine that maps voxel indices (i, j, k) to RAS+ world millimetres.

    The affine follows the NIfTI convention (RAS+), whatever file it came from:
    DICOM readers convert from LPS. ``meta`` holds format-specific facts needed to
    write results back (e.g. the DICOM series UIDs); never patient names or IDs.
    """

    array: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3D, got shape {self.array.shape}")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4, got {aff.shape}")
        if not np.all(np.isfinite(aff)):  # readers refuse such files; this catches a computed one
            raise ValueError(f"Volume affine must be finite, got {aff.tolist()}")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along array axes 0, 1, 2."""
        sp = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(sp[0]), float(sp[1]), float(sp[2]))

    @property
    def origin(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.affine[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """Unit direction cosines, one column per array axis (RAS+)."""
        return self.affine[:3, :3] / np.asarray(self.spacing)[None, :]

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry, new contents (e.g. labels predicted for this CT)."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.shape}")
        return Volume(array, self.affine.copy(), dict(self.meta))

    def same_grid(self, other: "Volume", atol: float = 1e-3) -> bool:
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol))


def affine_from_spacing(spacing: tuple[float, float, float], origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Axis-aligned RAS+ affine for generated data."""
    aff = np.diag([float(spacing[0]), float(spacing[1]), float(spacing[2]), 1.0])
    aff[:3, 3] = origin
    return aff
