"""Which model made an output: the checkpoint's file name and the first 12 hex digits of its SHA-256.

Computed once per run (``inference.outputs.output_context``), written into every RTSTRUCT
(ROIGenerationDescription), SEG (Algorithm Identification), qa.json, summary.csv and the node's
job database, so an output can be traced to the exact file that made it (``sha256sum FILE``
shows the same first 12 digits). Several checkpoints (an ensemble, a CV folder) are named by
their source and the SHA-256 of their members' digests in order.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rtseg.errors import DataError

SHORT_HASH = 12
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The file's SHA-256 in hex (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_CHUNK), b""):
                h.update(block)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the checkpoint to identify it ({exc.strerror or exc})") from None
    return h.hexdigest()


@dataclass(frozen=True)
class ModelIdentity:
    """A model as outputs name it: ``name`` (checkpoint file name) and ``sha256`` (hex digest)."""

    name: str
    sha256: str

    @property
    def short(self) -> str:
        """The first 12 hex digits: what every output shows."""
        return self.sha256[:SHORT_HASH]

    def __str__(self) -> str:
        return f"{self.name} sha256:{self.short}"

    def text(self, limit: int = 64, prefix: str = "") -> str:
        """``prefix`` + ``sha256:<12> <name>`` within ``limit`` characters (a DICOM LO holds 64): the name is
        shortened, never the hash; no backslash (DICOM's value separator)."""
        head = f"{prefix}sha256:{self.short} "
        name = self.name.replace("\\", "/")
        room = max(0, limit - len(head))
        return (head + (name if len(name) <= room else name[: max(0, room - 3)] + "...")).strip()[:limit]

    def to_dict(self) -> dict[str, str]:
        return {"checkpoint": self.name, "sha256": self.short}


def model_identity(paths: Sequence[str | os.PathLike[str]], source: str = "") -> ModelIdentity:
    """One checkpoint: its file name and SHA-256; several: ``source`` (or the first name + count) and the SHA-256
    of their digests in order."""
    files = [Path(p) for p in paths]
    if not files:
        raise DataError("no checkpoint to identify")
    digests = [file_sha256(p) for p in files]
    if len(files) == 1:
        return ModelIdentity(files[0].name, digests[0])
    name = Path(source).name if source else f"{files[0].name} + {len(files) - 1} more"
    return ModelIdentity(name, hashlib.sha256("\n".join(digests).encode()).hexdigest())
