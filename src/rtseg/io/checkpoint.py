"""Checkpoint files: a plain dict of tensors and JSON-like values, written atomically, read with weights_only=True."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path

FORMAT_VERSION = 1


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    data = {"rtseg_format": FORMAT_VERSION, **payload}
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:  # through a Python file, so a full disk raises OSError(ENOSPC), not a bare RuntimeError
            torch.save(data, fh)
    return target


def load_checkpoint(path: str | os.PathLike[str], require_rtseg: bool = True) -> dict[str, Any]:
    """Load safely (no pickled code). Original-code-base/DataParallel checkpoints without our metadata pass with require_rtseg=False."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: checkpoint not found")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{p}: not a loadable checkpoint ({first[:200]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a dict checkpoint, found {type(data).__name__}")
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
