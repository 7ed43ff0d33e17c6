"""Checkpoint files: a plain dict of tensors and JSON-like values, written atomically, read with weights_only=True."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path
from rtseg.io.file_kind import EXPECTED, describe_folder, not_a_checkpoint, run_hint, unloadable

FORMAT_VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    data = {"rtseg_format": FORMAT_VERSION, **payload}
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:  # through a Python file, so a full disk raises OSError(ENOSPC), not a bare RuntimeError
            torch.save(data, fh)
    return target


def load_checkpoint(path: str | os.PathLike[str], require_rtseg: bool = True) -> dict[str, Any]:
    """Load safely (no pickled code). Original-code-base/DataParallel checkpoints without our metadata pass with require_rtseg=False.

    Anything else is one :class:`DataError` in rtseg's words: what the file is (a NIfTI image, an empty file, a
    truncated zip archive, a TensorBoard event file, ...) and what was expected; PyTorch's own text never passes."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: found {describe_folder(p)}; {EXPECTED}{run_hint(p)}")
    if not p.is_file():
        raise DataError(f"{p}: checkpoint not found; {EXPECTED}")
    found = not_a_checkpoint(p)
    if found is not None:
        raise DataError(f"{p}: found {found}; {EXPECTED}{run_hint(p)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's text advises the unsafe way round: never shown
        raise DataError(f"{p}: found {unloadable(p, exc)}; {EXPECTED}") from None
    if not isinstance(data, dict):
        raise DataError(f"{p}: found a PyTorch file holding a {type(data).__name__}; {EXPECTED}")
    if require_rtseg and "rtseg_format" not in data:
        raise DataError(f"{p}: not an rtseg checkpoint (no 'rtseg_format' key); use it as MODEL.INIT_MODEL to start training from its weights")
    return data


def extract_state_dict(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Model weights from our checkpoints, the original code base's ({'model_state': ...}) or a bare state dict; strips 'module.'."""
    for key in ("model", "model_state", "state_dict"):
        if key in data and isinstance(data[key], dict):
            data = data[key]
            break
    out = {}
    for k, v in data.items():
        if isinstance(v, torch.Tensor):
            out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out
