"""The network's canonical orientation: RAS+, reached by axis permutation and flips only (lossless)."""
from __future__ import annotations

from rtseg.io.orientation import Reorientation, reorient
from rtseg.io.volume import Volume

CANONICAL_AXES = "RAS"


def to_canonical(volume: Volume) -> tuple[Volume, Reorientation]:
    """``volume`` on RAS+ axes and the way back (``Reorientation.undo``)."""
    return reorient(volume, CANONICAL_AXES)


__all__ = ["CANONICAL_AXES", "Reorientation", "to_canonical"]
