"""Where a job's outputs go: one registry of destination kinds, read by the config check, routing and the sender.

A destination is written as text in the config and kept as that text in the job queue
(``str(destination)`` gives it back). Each kind parses its own spelling (``parse`` returns None
for text that is not its syntax) and sends a job's output files (``send`` returns None on
success, else why not; the sender retries). Built in: DICOM C-STORE (``AE@host:port``) and a
folder (``folder:/PATH``, files copied atomically). Adding a kind is a module with a class like
those two plus one :func:`register_destination` line below.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Protocol, Sequence

from rtseg.errors import ConfigError
from rtseg.serve.dicom_destination import DicomStoreKind
from rtseg.serve.folder_destination import FolderKind

CALLER = "caller"
"""Destination meaning: back to the calling AE title, at the caller's address, on ``caller_port``."""
OUTPUTS_SEPARATOR = "\n"  # a job's output files as one queue value (one path: as before there were several)


class Destination(Protocol):
    """One parsed destination; ``str()`` is its config spelling."""

    def send(self, files: Sequence[Path], node_ae_title: str) -> Optional[str]: ...


class DestinationKind(Protocol):
    name: str
    syntax: str  # for error messages and help, e.g. "AE@host:port"

    def parse(self, text: str) -> Optional[Destination]: ...


_KINDS: list[DestinationKind] = []  # in registration order: the first kind that reads a text has it


def register_destination(kind: DestinationKind) -> DestinationKind:
    """Make ``kind``'s spelling valid in ``destination`` / ``destinations`` and deliverable by the sender."""
    if any(k.name == kind.name for k in _KINDS):
        raise ValueError(f"destination kind {kind.name!r} is registered twice")
    _KINDS.append(kind)
    return kind


def unregister_destination(name: str) -> None:
    """Remove a kind (tests register toy ones)."""
    _KINDS[:] = [k for k in _KINDS if k.name != name]


def destination_syntax() -> str:
    return ", ".join(k.syntax for k in _KINDS)


def parse_destination(text: str) -> Destination:
    """The first kind that reads ``text``; anything else is a ConfigError naming the text and every syntax."""
    for kind in _KINDS:
        dest = kind.parse(text.strip())
        if dest is not None:
            return dest
    raise ConfigError(f"destination {text!r}: expected {destination_syntax()} or '{CALLER}'")


def join_outputs(paths: Sequence[Path]) -> str:
    """A job's output files as the one text the queue keeps for them."""
    return OUTPUTS_SEPARATOR.join(str(p) for p in paths)


def split_outputs(text: str) -> list[Path]:
    return [Path(p) for p in text.split(OUTPUTS_SEPARATOR) if p]


register_destination(DicomStoreKind())
register_destination(FolderKind())
