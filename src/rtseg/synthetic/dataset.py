"""Phantom datasets on disk: split counts, NIfTI or legacy_npy layout, and a manifest of what was drawn."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from rtseg.errors import ConfigError, DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.layouts.registry import LEGACY_NPY, NIFTI, canonical_layout
from rtseg.io.nifti import write_nifti
from rtseg.io.legacy_npy import to_legacy_npy_array, write_legacy_npy_case
from rtseg.io.volume import Volume
from rtseg.labels import PELVIS_CLASS_NAMES
from rtseg.synthetic.canvas import N_CLASSES
from rtseg.synthetic.frame import check_grid
from rtseg.synthetic.patient import DEFAULT_SHAPE, DEFAULT_SPACING, SOURCE, generate_patient

DEFAULT_SPLIT_FRACTIONS: dict[str, float] = {"train": 0.7, "val": 0.15, "test": 0.15}
MANIFEST_NAME = "phantoms.json"
PHANTOM_LAYOUTS = (NIFTI, LEGACY_NPY)


def split_counts(n_cases: int, fractions: Mapping[str, float] | None = None) -> dict[str, int]:
    """Cases per split by largest remainder; every split with a positive fraction gets one if possible."""
    fr = dict(DEFAULT_SPLIT_FRACTIONS if fractions is None else fractions)
    if n_cases < 1:
        raise ConfigError(f"number of phantom cases must be >= 1, got {n_cases}")
    if not fr or any(not math.isfinite(v) or v < 0 for v in fr.values()) or sum(fr.values()) <= 0:
        raise ConfigError(f"split fractions must be non-negative with a positive sum, got {fr}")
    total = sum(fr.values())
    raw = {k: n_cases * v / total for k, v in fr.items()}
    counts = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n_cases - sum(counts.values())]:
        counts[k] += 1
    for k in fr:  # borrow from the largest split so a requested split is never empty
        if fr[k] > 0 and counts[k] == 0:
            donor = max(counts, key=lambda j: counts[j])
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[k] += 1
    return counts


def legacy_npy_arrays(ct: Volume, labels: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Arrays in the legacy_npy (D, H, W) order, as ``rtseg.io.legacy_npy`` reads them back.

    D = axial slices (inferior -> superior), H = rows (anterior -> posterior), W = columns
    (patient's right -> left), i.e. the original code base's radiological PNG slices stacked; for our
    axis-aligned RAS grid that is ``array[::-1, ::-1, :].transpose(2, 1, 0)``.
    """
    return to_legacy_npy_array(ct), to_legacy_npy_array(labels)


def _resolve_counts(n_cases: int | None, splits: Mapping[str, int] | None, split_fractions: Mapping[str, float] | None) -> dict[str, int]:
    """Cases per split from explicit counts or from fractions of ``n_cases``; split names are plain folder names."""
    if splits is not None:
        if split_fractions is not None:
            raise ConfigError("give either split counts or split fractions, not both")
        counts = {str(k): int(v) for k, v in splits.items()}
        if not counts or any(v < 0 for v in counts.values()) or sum(counts.values()) == 0:
            raise ConfigError(f"split counts must be non-negative with at least one case, got {counts}")
        if n_cases is not None and sum(counts.values()) != n_cases:
            raise ConfigError(f"split counts {counts} add up to {sum(counts.values())}, but {n_cases} cases were asked for")
    else:
        if n_cases is None:
            raise ConfigError("number of phantom cases is required when no split counts are given")
        counts = split_counts(int(n_cases), split_fractions)
    for name in counts:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ConfigError(f"split name must be a plain folder name, got {name!r}")
    return counts


def _prepare_out(out: Path, counts: Mapping[str, int], overwrite: bool) -> None:
    """Refuse a non-empty split folder (stale cases would mix in) unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    for name, n in counts.items():
        d = out / name
        if n and d.is_dir() and any(d.iterdir()):
            if not overwrite:
                raise DataError(f"{d}: folder is not empty; choose another output folder or overwrite it (--overwrite)")
            shutil.rmtree(d)


def _write_case(folder: Path, case_id: str, ct: Volume, lab: Volume, layout: str) -> None:
    if layout == NIFTI:
        write_nifti(ct, folder / f"{case_id}_ct.nii.gz", dtype=np.int16)
        write_nifti(lab, folder / f"{case_id}_labels.nii.gz", dtype=np.uint8)
    else:
        ct_a, lab_a = legacy_npy_arrays(ct, lab)
        write_legacy_npy_case(folder, case_id, ct_a, lab_a, n_classes=N_CLASSES)


def _manifest(layout: str, seed: int, shape: Sequence[int], spacing: Sequence[float], ids: dict[str, list[str]]) -> dict[str, object]:
    legacy = layout == LEGACY_NPY
    return {
        "generator": SOURCE,
        "layout": layout,
        "seed": int(seed),
        "shape": list(shape),
        "spacing": list(spacing),
        "legacy_npy_axes": "(D, H, W) = (inferior->superior, anterior->posterior, right->left)" if legacy else None,
        "legacy_npy_spacing_dhw": list(spacing[::-1]) if legacy else None,
        "class_names": list(PELVIS_CLASS_NAMES),
        "splits": ids,
    }


def write_phantom_dataset(
    out_dir: str | os.PathLike[str],
    n_cases: int | None = None,
    layout: str = NIFTI,
    seed: int = 0,
    splits: Mapping[str, int] | None = None,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    split_fractions: Mapping[str, float] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, list[str]]:
    """Write a phantom dataset; returns case ids per split.

    Case ``i`` (counted over all splits in order) is drawn from ``default_rng(seed + i)``.
    ``nifti``: ``<out>/<split>/<id>_ct.nii.gz`` + ``<id>_labels.nii.gz``.
    ``legacy_npy`` (also spelt ``seed``): ``<out>/<split>/CT/<id>.npy``, ``SEG/<id>.npy``,
    ``SEG_onehot/<id>.npy`` with arrays in (D, H, W) display order, see :func:`legacy_npy_arrays`;
    that layout has no geometry, so the voxel spacing is kept in ``phantoms.json``.
    A non-empty split folder is refused unless ``overwrite`` (stale cases would mix in).
    """
    shape, spacing = check_grid(shape, spacing)
    layout = canonical_layout(layout, PHANTOM_LAYOUTS, "phantom layout")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"phantom seed must be a non-negative integer, got {seed!r}")
    counts = _resolve_counts(n_cases, splits, split_fractions)
    out = Path(out_dir)
    _prepare_out(out, counts, overwrite)

    from tqdm import tqdm

    ids: dict[str, list[str]] = {}
    index = 0
    with tqdm(total=sum(counts.values()), desc="phantoms", unit="case", disable=not progress) as bar:
        for name, n in counts.items():
            ids[name] = []
            for _ in range(n):
                case_id = f"phantom_{index:03d}"
                ct, lab = generate_patient(seed + index, shape, spacing)
                _write_case(out / name, case_id, ct, lab, layout)
                ids[name].append(case_id)
                index += 1
                bar.update(1)
    with atomic_path(out / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(_manifest(layout, seed, shape, spacing, ids), indent=2) + "\n")
    return ids
