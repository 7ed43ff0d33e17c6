"""Destination kind ``folder:/PATH``: the job's outputs copied into a folder (a share a TPS or script watches).

Each file appears whole or not at all (temporary file beside it, fsync, rename: ``io.atomic``), so a
watcher never reads half a file; a resend replaces the files with the same names.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from rtseg.io.atomic import atomic_path

PREFIX = "folder:"


@dataclass(frozen=True)
class FolderDestination:
    folder: Path

    def __str__(self) -> str:
        return f"{PREFIX}{self.folder}"

    def send(self, files: Sequence[Path], node_ae_title: str) -> Optional[str]:
        """Copy every file in (the folder is created if missing); an error (full disk, no permission) is raised."""
        for f in files:
            with atomic_path(self.folder / f.name) as tmp:
                shutil.copyfile(f, tmp)
        return None


class FolderKind:
    name = "folder"
    syntax = f"{PREFIX}/ABSOLUTE/PATH"

    def parse(self, text: str) -> Optional[FolderDestination]:
        if not text.startswith(PREFIX):
            return None
        folder = Path(text[len(PREFIX):].strip())
        return FolderDestination(folder) if folder.is_absolute() else None
