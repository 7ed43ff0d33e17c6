"""Which model the node contours with: the model version (checkpoint hash) and ``rtseg serve promote``.

The model version is the first 12 hex digits of the SHA-256 of the checkpoint file (a folder, e.g. a CV
run or an ensemble: of its files' hashes in name order). A promotion is a row in the node's database
(``promotions``): from then on every series routed to the rule (``*``: every rule) is contoured with the
promoted checkpoint instead of the configured one; the job's ``checkpoint`` column, its edit rows and
``rtseg serve status`` name it. Nothing changes the model but an explicit promotion.
"""
from __future__ import annotations

import hashlib
import sqlite3
import time
from functools import lru_cache
from pathlib import Path
from typing import Optional

from rtseg.errors import ConfigError
from rtseg.io.fingerprint import file_sha256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    promoted_at REAL NOT NULL
);
"""


@lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int, size: int) -> str:
    p = Path(path)
    if p.is_dir():
        return hashlib.sha256("".join(file_sha256(f) for f in sorted(p.rglob("*")) if f.is_file()).encode()).hexdigest()[:12]
    return file_sha256(p)[:12]


def model_version(checkpoint: str | Path) -> str:
    """First 12 hex digits of the checkpoint's SHA-256 ("" if it is gone)."""
    p = Path(checkpoint)
    try:
        st = p.stat()
    except OSError:
        return ""
    return _cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def _connect(db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(db), isolation_level=None, timeout=30)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(_SCHEMA)
    return con


def promote(db: Path, checkpoint: str | Path, rule: str = "*") -> str:
    """Record the promotion of ``checkpoint`` (it must load as an rtseg model) for ``rule``; its model version."""
    from rtseg.inference.ensemble import load_predictor

    p = Path(checkpoint).resolve()
    if not Path(db).is_file():
        raise ConfigError(f"{db}: no node database (is --store the node's store folder? start the node once)")
    if not p.exists():
        raise ConfigError(f"{checkpoint}: checkpoint not found")
    load_predictor(p, "cpu")  # a checkpoint that does not load is refused here, not at the next series
    version = model_version(p)
    con = _connect(db)
    try:
        con.execute("INSERT INTO promotions (rule, checkpoint, model, promoted_at) VALUES (?,?,?,?)",
                    (rule, str(p), version, time.time()))
    finally:
        con.close()
    return version


def promoted_checkpoint(db: Path, rule: str) -> Optional[str]:
    """The checkpoint last promoted for ``rule`` (or for every rule), None if none was."""
    if not db.is_file():
        return None
    con = _connect(db)
    try:
        row = con.execute("SELECT checkpoint FROM promotions WHERE rule IN (?, '*') ORDER BY id DESC LIMIT 1",
                          (rule,)).fetchone()
    finally:
        con.close()
    return None if row is None else str(row[0])


def promotions(db: Path) -> list[tuple[str, str, str, float]]:
    if not db.is_file():
        return []
    con = _connect(db)
    try:
        return [tuple(r) for r in con.execute("SELECT rule, checkpoint, model, promoted_at FROM promotions ORDER BY id")]
    finally:
        con.close()
