"""JSON side files (splits, partial labels, plans): read with one-line errors, write atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rtseg.errors import DataError
from rtseg.io.atomic import atomic_path


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """``what`` names the config key or role of the file in the error (e.g. 'DATASET.SPLITS')."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} {p}: file not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not valid JSON (not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start})") from None
    except RecursionError:
        raise DataError(f"{p}: not valid JSON (nested too deeply)") from None


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=float))
    return target
