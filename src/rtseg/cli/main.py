"""The ``rtseg`` command: parse, load config, call the API. No logic lives here."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from rtseg import __version__
from rtseg.device import retain_freed_memory
from rtseg.cli.common import run_command, set_hint

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
    "rtseg.cli.audit",
    "rtseg.cli.compare_models",
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


class LibraryLogs(logging.Filter):
    """What libraries (highdicom, pydicom, pynetdicom, ...) may print: their warnings and errors as one line each,
    never their INFO chatter (highdicom's per-module "copy attributes" lines) nor a logged traceback (pydicom logs
    each failed decoder's exception before rtseg's one-line error says what went wrong). ``-v`` shows everything."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose or record.name == "rtseg" or record.name.startswith("rtseg."):
            return True
        return record.levelno >= logging.WARNING and not record.exc_info


class MessageFormatter(logging.Formatter):
    """rtseg's own lines as they are; a library's prefixed with its name, so a line says where it came from."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.name == "rtseg" or record.name.startswith("rtseg.") or record.name == "root":
            return text
        return f"{record.name.split('.')[0]}: {text}"


def configure_logging(verbose: bool) -> None:
    """One stderr handler on the root logger: rtseg's INFO and up (DEBUG with -v), libraries as :class:`LibraryLogs` says."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MessageFormatter("%(message)s"))
    handler.addFilter(LibraryLogs(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    hint = set_hint(args, extras)
    if hint is not None:  # `--set KEY VALUE`: one line saying how, not argparse's "unrecognized arguments: VALUE"
        print(f"rtseg {args.command}: error: {hint}", file=sys.stderr)
        return 2
    if extras:
        args = parser.parse_args(argv)  # argparse's own message and exit for anything else left over
    configure_logging(args.verbose)
    retain_freed_memory()  # large tensors reuse touched pages: ~20 % of a CPU prediction (rtseg.device)
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
