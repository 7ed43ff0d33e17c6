"""What a dataset layout is: a way to list a split's cases (``CaseRef``) and to read their files.

A layout module defines one :class:`Layout` value (``LAYOUT``); ``rtseg.io.layouts.registry`` registers it.
These types live apart from the registry so that layout modules and the registry do not import
each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from rtseg.io.nifti import read_nifti
from rtseg.io.volume import Volume


@dataclass(frozen=True)
class CaseRef:
    """One case of a split: its image file, its label file (None if unlabelled) and the layout that reads them."""

    case_id: str
    image: Path
    label: Optional[Path]
    layout: str


@dataclass(frozen=True)
class SplitQuery:
    """What a layout needs to list one split: the DATASET keys that name folders, splits and classes."""

    root: Path
    split: str
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    splits_file: Optional[Path] = None  # DATASET.SPLITS
    n_classes: Optional[int] = None  # DATASET.N_CLASSES, for layouts whose metadata names the classes


ListSplit = Callable[[SplitQuery], "list[CaseRef]"]
ReadVolume = Callable[[Path], Volume]


@dataclass(frozen=True)
class Layout:
    """A dataset layout: its name (``DATASET.NAME``), older spellings, how to list a split and read a case.

    ``has_geometry`` is False for layouts whose files carry no affine (image and labels are then
    only checked for equal shape)."""

    name: str
    list_split: ListSplit
    summary: str
    read_image: ReadVolume = read_nifti
    read_labels: ReadVolume = read_nifti
    aliases: tuple[str, ...] = ()
    has_geometry: bool = True
