"""The ``rtseg`` command: parse, load config, call the API. No logic lives here."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from rtseg import __version__
from rtseg.cli.common import run_command

# One module per subcommand; each defines ``register(subparsers)`` (see rtseg.cli.common.add_command).
COMMAND_MODULES: tuple[str, ...] = (
    "rtseg.cli.train",
    "rtseg.cli.cv",
    "rtseg.cli.evaluate",
    "rtseg.cli.phantoms",
    "rtseg.cli.visualize",
    "rtseg.cli.convert",
    "rtseg.cli.predict",
    "rtseg.cli.export",
    "rtseg.cli.plan",
    "rtseg.cli.demo",
    "rtseg.cli.review",
    "rtseg.cli.calibrate",
    "rtseg.cli.serve",
    "rtseg.cli.adapt",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtseg",
        description="3D CT segmentation for radiotherapy: train on contoured CTs, contour new patients, "
        "read and write DICOM CT and RTSTRUCT.",
    )
    parser.add_argument("--version", action="version", version=f"rtseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
