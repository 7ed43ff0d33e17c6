"""Names of the on-disk dataset layouts: one name per layout, and the older spellings still accepted.

``legacy_npy`` is the original code base's layout: ``<split>/CT/<id>.npy``, ``<split>/SEG/<id>.npy``
(and ``SEG_onehot/``), arrays in (D, H, W) display order without geometry; configs call it
``DATASET.NAME: prostateCT_vol``. Earlier rtseg versions called it ``seed``; both spellings are
accepted wherever a layout is named (CLI options, Python API) without a warning.
"""
from __future__ import annotations

from typing import Sequence

from rtseg.errors import ConfigError

NIFTI = "nifti"
LEGACY_NPY = "legacy_npy"
LAYOUT_ALIASES: dict[str, str] = {"seed": LEGACY_NPY, "prostateCT_vol": LEGACY_NPY}


def canonical_layout(name: str, allowed: Sequence[str], what: str = "layout") -> str:
    """The canonical name for ``name`` (an alias maps to its layout); ConfigError if it is not in ``allowed``."""
    canonical = LAYOUT_ALIASES.get(name, name)
    if canonical not in allowed:
        raise ConfigError(f"{what} must be one of {', '.join(repr(a) for a in allowed)}, got {name!r}")
    return canonical
