"""Figures from Volumes: check the grids match, reorient to RAS+, then a GIF (``.gif``) or montage (``.png``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from rtseg.data.orientation import to_canonical
from rtseg.errors import ConfigError, DataError
from rtseg.figures.gif import save_gif
from rtseg.figures.montage import save_montage
from rtseg.figures.overlay import RGB, default_colors
from rtseg.io.volume import Volume
from rtseg.labels import IGNORE_INDEX


def _describe(v: Volume, fallback: str) -> str:
    return str(v.meta.get("source", fallback))


def _grid_text(v: Volume) -> str:
    sp = ", ".join(f"{s:.3g}" for s in v.spacing)
    org = ", ".join(f"{o:.1f}" for o in v.origin)
    return f"shape {list(v.shape)}, spacing ({sp}) mm, origin ({org})"


def save_volume_figure(
    ct: Volume,
    labels: Volume,
    pred: Volume | None,
    path: str | os.PathLike[str],
    colors: Sequence[RGB] | None = None,
    kind: Literal["gif", "png"] | None = None,
    **options: object,
) -> Path:
    """GIF (``.gif``) or montage (``.png``) from Volumes: grids must match; arrays are shown in RAS order."""
    for other, what in ((labels, "labels"), (pred, "prediction")):
        if other is not None and not ct.same_grid(other):
            raise DataError(
                f"{_describe(other, what)} ({_grid_text(other)}) is not on the grid of {_describe(ct, 'CT')} ({_grid_text(ct)}); "
                "resample it onto the CT grid first"
            )
    target = Path(path)
    fmt = kind or target.suffix.lower().lstrip(".")
    if fmt not in ("gif", "png"):
        raise ConfigError(f"{target}: output must end in .gif (animated slices) or .png (montage)")
    lab_arrays = []
    for v, what in ((labels, "labels"), (pred, "prediction")):
        if v is None:
            lab_arrays.append(None)
            continue
        a = np.asarray(v.array)
        if not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.isfinite(a)) or np.any(a != np.rint(a)):
                raise DataError(f"{_describe(v, what)}: labels must be whole numbers, found non-integer values")
        if a.min() < 0:
            raise DataError(f"{_describe(v, what)}: labels must be >= 0, found {int(a.min())}")
        lab_arrays.append(to_canonical(v.with_array(a.astype(np.int64)))[0].array)
    ct_c = to_canonical(ct)[0]
    if colors is None:
        top = max(int(a[a != IGNORE_INDEX].max(initial=0)) for a in lab_arrays if a is not None)
        colors = default_colors(top + 1)
    if fmt == "gif":
        return save_gif(ct_c.array, lab_arrays[0], lab_arrays[1], target, colors, spacing=ct_c.spacing, **options)  # type: ignore[arg-type]
    return save_montage(ct_c.array, lab_arrays[0], lab_arrays[1], target, colors, spacing=ct_c.spacing, **options)  # type: ignore[arg-type]
