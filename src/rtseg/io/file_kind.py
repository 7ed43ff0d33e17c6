"""What a file is, told from its first bytes: so that a wrong file given as a checkpoint gets one line in
rtseg's words ("a NIfTI image", "an empty file", "a truncated zip archive", "a TensorBoard event file") instead
of PyTorch's unpickler text, which advises loading with pickled code allowed.

:func:`not_a_checkpoint` recognises what is certainly not a checkpoint before ``torch.load`` runs;
:func:`unloadable` names what ``torch.load`` could not read, from its exception type (never its text).
"""
from __future__ import annotations

import gzip
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Optional

EXPECTED = "expected a checkpoint written by 'rtseg train' (.pt, e.g. RUN/checkpoints/best.pt)"
HEAD_BYTES = 4096
NIFTI_MAGICS = (b"n+1\0", b"ni1\0")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PICKLE_PROTO = 0x80
GLOBAL_RE = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _head(path: Path, n: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _is_nifti(head: bytes) -> bool:
    return head[344:348] in NIFTI_MAGICS or (len(head) >= 8 and head[4:8] in (b"n+2\0", b"ni2\0"))


def _gzip_kind(path: Path) -> str:
    try:
        with gzip.open(path, "rb") as fh:
            inner = fh.read(HEAD_BYTES)
    except (OSError, EOFError):
        return "a damaged or truncated gzip file"
    if _is_nifti(inner):
        return "a NIfTI image (gzip-compressed)"
    if inner[132 - 4:132] == b"DICM":
        return "a DICOM file (gzip-compressed)"
    return "a gzip-compressed file"


def _is_tfrecord_event(head: bytes) -> bool:
    """TensorBoard's event files are TFRecords: uint64 length, uint32 CRC, then an Event ('brain.Event:2' first)."""
    if len(head) < 16:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length < 1 << 20 and b"brain.Event:" in head[12:12 + min(length, HEAD_BYTES)]


def _zip_kind(path: Path) -> Optional[str]:
    """None for a PyTorch zip checkpoint (``<name>/data.pkl``), else what the zip archive is."""
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        return f"a truncated zip archive ({size} bytes, its end is missing: an interrupted copy or download?)"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            broken = zf.testzip()  # every member against its CRC-32: torch.load itself does not check them
    except Exception:  # noqa: BLE001 - a damaged directory raises anything from BadZipFile to UnicodeDecodeError
        return "a damaged zip archive (its directory does not read)"
    if broken is not None:
        return (f"a damaged zip archive (its member {broken.rsplit('/', 1)[-1]} fails its CRC check: the file "
                "changed after it was written)")
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "a TorchScript archive (an exported network: give the checkpoint it was exported from)"
    if any(n.endswith("data.pkl") for n in names):
        return None
    if names and all(n.endswith(".npy") for n in names):
        return "a NumPy archive (.npz)"
    return "a zip archive without a PyTorch checkpoint inside"


def _text_kind(head: bytes) -> Optional[str]:
    if b"\0" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        if len(head) < HEAD_BYTES:
            return None
        try:  # the read may have cut a multi-byte character
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return None
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return "a JSON text file"
    return "a plain text file"


def not_a_checkpoint(path: Path) -> Optional[str]:
    """What ``path`` is when its content is certainly no PyTorch checkpoint ("a NIfTI image", ...); None when it
    may be one (a PyTorch zip archive, a pickle: ``torch.load`` decides)."""
    head = _head(path)
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(path)
    if head[0] == PICKLE_PROTO and len(head) > 1 and 2 <= head[1] <= 5:
        return None  # the legacy (pre-zip) PyTorch format
    if head.startswith(b"\x1f\x8b"):
        return _gzip_kind(path)
    if _is_nifti(head):
        return "a NIfTI image"
    if head[128:132] == b"DICM":
        return "a DICOM file"
    if _is_tfrecord_event(head) or "tfevents" in path.name:
        return "a TensorBoard event file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy array (.npy)"
    if head.startswith(HDF5_MAGIC):
        return "an HDF5 file (Keras/TensorFlow weights?)"
    if len(head) > 9 and head[8:10] == b'{"':
        return "a safetensors file"
    if path.suffix.lower() == ".onnx":
        return "an ONNX model (an exported network: give the checkpoint it was exported from)"
    text = _text_kind(head)
    if text is not None:
        return text
    return f"a file of unknown kind ({len(head)}+ bytes starting {head[:4].hex(' ')})"


def unloadable(path: Path, exc: BaseException) -> str:
    """What a file that ``torch.load`` (weights only) refused is; from the exception's type, never its advice."""
    if isinstance(exc, EOFError):
        return "a truncated PyTorch file (it ends before its data: an interrupted copy or download?)"
    if isinstance(exc, pickle.UnpicklingError):
        found = GLOBAL_RE.search(str(exc))
        if found or "Weights only load failed" in str(exc):
            what = f" ({found.group(1)})" if found else ""
            return (f"a PyTorch file that pickles Python objects{what} besides tensors and plain values; rtseg loads "
                    "only those, because unpickling objects can run code")
        return "a damaged or truncated PyTorch file (its pickle does not read)"
    if isinstance(exc, RuntimeError) and "zip" in str(exc).lower():
        return "a damaged PyTorch checkpoint (its zip archive does not read: an interrupted copy?)"
    return f"an unreadable PyTorch file ({type(exc).__name__})"


def run_hint(path: Path) -> str:
    """'; this run's checkpoint is RUN/checkpoints/best.pt' when ``path`` lies in (or is) a run folder, else ''."""
    folder = path if path.is_dir() else path.parent
    for run in (folder, folder.parent):
        best = run / "checkpoints" / "best.pt"
        if best.is_file():
            return f"; this run's checkpoint is {best}"
    return ""


def describe_folder(path: Path) -> str:
    """What a folder given as a checkpoint holds, in a few words."""
    if (path / "checkpoints" / "best.pt").is_file():
        return "a run folder"
    found = sorted(path.glob("*.pt"))
    if found:
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        return f"a folder holding {', '.join(f.name for f in found[:3])}{more} (give one of them)"
    return "a folder with no checkpoint in it (no .pt file)"
