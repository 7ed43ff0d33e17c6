"""Recompress big wheels with LZMA so that more fits in the 64 MiB a GPU device call carries.

A wheel is a zip file; pip extracts it with Python's zipfile, which reads LZMA members, and the
RECORD hashes are of the uncompressed files, so the repacked wheel installs the same files
(SimpleITK 2.5.7: 50.3 -> 27.4 MiB). Wheels under ``--over`` MiB are left alone.

    python benchmarks/wheel_lzma.py .whl-nnunet --over 4
"""
from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path


def repack(wheel: Path) -> tuple[float, float]:
    """Rewrite ``wheel`` in place with LZMA members (atomically); (MiB before, MiB after)."""
    tmp = wheel.with_name(f".{wheel.name}.tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_LZMA) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename), compress_type=zipfile.ZIP_LZMA)
    before = wheel.stat().st_size / 2**20
    os.replace(tmp, wheel)
    return before, wheel.stat().st_size / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="folder of .whl files")
    ap.add_argument("--over", type=float, default=4.0, help="repack wheels larger than this many MiB (default 4)")
    args = ap.parse_args()
    for wheel in sorted(args.folder.glob("*.whl")):
        if wheel.stat().st_size > args.over * 2**20:
            before, after = repack(wheel)
            print(f"{wheel.name}: {before:.1f} -> {after:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
