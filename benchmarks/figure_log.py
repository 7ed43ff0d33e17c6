"""One measurement per line in a JSON-lines file, so a short GPU lease leaves machine-readable figures.

Every benchmark that takes ``--figures PATH`` appends records here: ``name``, ``value``,
``unit``, ``command`` (the command line that measured it) and ``seconds`` (how long that
measuring command ran), plus optional fields (``device``, ``note``). Appending (not
rewriting) lets several processes of one check share one file; each line is written
with one ``write`` call so lines never interleave.
"""
from __future__ import annotations

import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Optional, Sequence


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The running command as a person would retype it (``python benchmarks/x.py ...``)."""
    args = list(sys.argv if argv is None else argv)
    return shlex.join(["python", *args])


def record(path: Optional[str | Path], name: str, value: float | int | str | None, unit: str,
           seconds: float, command: Optional[str] = None, **extra: object) -> dict:
    """Append one figure to ``path`` (no-op without a path); returns the record.

    A NaN or infinite value (e.g. Dice of an organ no case contours) is written as null, so every line is
    strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    rec = {"name": name, "value": value, "unit": unit, "command": command or command_line(),
           "seconds": round(float(seconds), 3), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    rec.update(extra)
    if path is not None:
        line = json.dumps(rec, default=float, allow_nan=False) + "\n"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
    return rec


def read(path: str | Path) -> list[dict]:
    """Every record of a figures file (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
