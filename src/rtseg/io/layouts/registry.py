"""The registry of on-disk dataset layouts: one :class:`~rtseg.io.layouts.case_refs.Layout` per ``DATASET.NAME``.

Adding a layout is one module defining ``LAYOUT = Layout(...)`` (how to list a split, how to read
a case) plus one :func:`register_layout` call; the config, ``rtseg train/val/test``, cross-validation
and the plan accept the name at once. Registered here: ``legacy_npy`` (the original code base's layout,
``<split>/CT|SEG/<id>.npy``, also spelled ``prostateCT_vol`` as configs call it and ``seed`` as
earlier rtseg versions did), ``nifti`` (split folders, or a flat folder with ``DATASET.SPLITS``),
``msd`` (Medical Segmentation Decathlon) and ``nnunet`` (nnU-Net v2 raw dataset).
"""
from __future__ import annotations

from typing import Sequence

from rtseg.errors import ConfigError, DataError
from rtseg.io.layouts import legacy_npy as layout_legacy_npy, msd as layout_msd, nifti as layout_nifti, nnunet as layout_nnunet
from rtseg.io.layouts.case_refs import CaseRef, Layout, SplitQuery
from rtseg.io.volume import Volume

__all__ = ["CaseRef", "Layout", "SplitQuery", "LEGACY_NPY", "NIFTI", "LAYOUT_ALIASES", "canonical_layout",
           "get_layout", "layout_names", "list_split", "read_case_image", "read_case_labels", "register_layout"]

NIFTI = layout_nifti.NAME
LEGACY_NPY = layout_legacy_npy.NAME
_LAYOUTS: dict[str, Layout] = {}
#: older or config spellings -> layout name (filled by register_layout)
LAYOUT_ALIASES: dict[str, str] = {}


def register_layout(layout: Layout) -> Layout:
    """Make ``layout`` (and its aliases) a valid ``DATASET.NAME``; a name taken twice is a programming error."""
    for name in (layout.name, *layout.aliases):
        if name in _LAYOUTS or name in LAYOUT_ALIASES:
            raise ValueError(f"dataset layout name {name!r} is already registered")
    _LAYOUTS[layout.name] = layout
    LAYOUT_ALIASES.update({a: layout.name for a in layout.aliases})
    return layout


for _module in (layout_legacy_npy, layout_nifti, layout_msd, layout_nnunet):
    register_layout(_module.LAYOUT)


def layout_names(with_aliases: bool = True) -> list[str]:
    return sorted(_LAYOUTS) + (sorted(LAYOUT_ALIASES) if with_aliases else [])


def get_layout(name: str, what: str = "DATASET.NAME") -> Layout:
    """The layout called ``name`` (or one of its aliases); ConfigError listing the valid names otherwise."""
    layout = _LAYOUTS.get(LAYOUT_ALIASES.get(name, name))
    if layout is None:
        raise ConfigError(f"{what} {name!r}: expected one of {', '.join(layout_names())}")
    return layout


def canonical_layout(name: str, allowed: Sequence[str], what: str = "layout") -> str:
    """The canonical name for ``name`` (an alias maps to its layout); ConfigError if it is not in ``allowed``."""
    canonical = LAYOUT_ALIASES.get(name, name)
    if canonical not in allowed:
        raise ConfigError(f"{what} must be one of {', '.join(repr(a) for a in allowed)}, got {name!r}")
    return canonical


def list_split(name: str, query: SplitQuery) -> list[CaseRef]:
    """The cases of ``query.split`` in layout ``name`` under ``query.root``."""
    if not query.root.is_dir():
        raise DataError(f"DATASET.PATH {query.root}: folder not found")
    return get_layout(name).list_split(query)


def read_case_image(ref: CaseRef) -> Volume:
    return get_layout(ref.layout).read_image(ref.image)


def read_case_labels(ref: CaseRef) -> Volume:
    """The label volume of a case, as stored (``rtseg.data.datasets.load_case`` checks it against the image)."""
    if ref.label is None:
        raise DataError(f"{ref.image}: case {ref.case_id} has no label file")
    return get_layout(ref.layout).read_labels(ref.label)
