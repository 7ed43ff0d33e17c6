"""Atomic file writes: a reader never sees a partial file, a failed write leaves the previous file intact.

The data goes to a temporary file beside the target, is flushed to disk
(fsync) and only then renamed over the target, so a crash or a full disk at
any moment leaves either the old file or the complete new one. A failed write
removes its temporary file and says in one line what the operating system
said (e.g. ENOSPC, no space left on device), naming the path.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from rtseg.errors import RtsegError


class WriteError(RtsegError):
    """An output could not be written (disk full, read-only, no permission); nothing was replaced."""


def _fsync(path: Path, directory: bool = False) -> None:
    if directory and not hasattr(os, "O_DIRECTORY"):  # Windows: a folder cannot be opened, nor needs syncing
        return
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # some filesystems cannot sync a folder
            raise
    finally:
        os.close(fd)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc``: writers such as torch.save re-raise a disk error as a RuntimeError."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def write_failure(target: Path, exc: OSError) -> WriteError:
    """One line for a failed write: the path, the errno name and what it means."""
    code = errno.errorcode.get(exc.errno or 0, "") if exc.errno else ""
    reason = f"{code}, {exc.strerror}" if code and exc.strerror else (exc.strerror or str(exc) or type(exc).__name__)
    kept = "the previous file is unchanged" if target.exists() else "nothing was written"
    return WriteError(f"{target}: cannot write ({reason}); {kept}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffixes so libraries that pick a format
    from the extension (``.nii.gz``, ``.png``) behave the same. An ``OSError``
    (from the block or from creating, syncing or renaming the file) becomes a
    :class:`WriteError`, also when a library re-raised it as another type;
    the temporary file is always removed.
    """
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(target.suffixes)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync(target.parent, directory=True)
    except Exception as exc:
        os_error = _os_error_in(exc)
        if os_error is None:
            raise
        raise write_failure(target, os_error) from exc
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
