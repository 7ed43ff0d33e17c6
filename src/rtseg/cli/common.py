"""What every subcommand shares: registration, common options, organ-name lists and the one-line error.

A subcommand module defines ``register(subparsers)``, which calls :func:`add_command` with the
function that runs it; options used by several commands are added here, so each keeps one name,
default and help text everywhere.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

from rtseg.config import Config, load_config
from rtseg.errors import ConfigError, RtsegError
from rtseg.labels import BACKGROUND

Command = Callable[[argparse.Namespace], int]
CHECKPOINT_HELP = "checkpoint written by 'rtseg train' (.pt)"


def add_command(
    sub: argparse._SubParsersAction, name: str, func: Command, help: str, description: str, aliases: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """A subcommand (``rtseg NAME`` or ``rtseg convert NAME``, also under the old names ``aliases``) that runs ``func``."""
    p = sub.add_parser(name, help=help, description=description, aliases=list(aliases))
    p.set_defaults(func=func)
    return p


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="CFG", help="YAML config in the original code base's format (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, repeatable, e.g. --set TRAINING.ITER_MAX=200 --set MODEL.BASE_FILTERS=16")


def set_hint(args: argparse.Namespace, extras: Sequence[str]) -> str | None:
    """The one-line hint for ``--set KEY VALUE`` (argparse leaves VALUE over as an unrecognised argument), or None."""
    loose = [o for o in getattr(args, "overrides", None) or [] if "=" not in o]
    if not loose:
        return None
    key = loose[0].rstrip(":")
    value = next((e for e in extras if not e.startswith("-")), None)
    if value is None:
        return f"--set takes KEY=VALUE, e.g. --set {key}=VALUE; got --set {loose[0]}"
    return f"--set takes KEY=VALUE; did you mean --set {key}={value}?"


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def config_name(path: str) -> str:
    return Path(path).name.removesuffix(".yml").removesuffix(".yaml")


def add_checkpoint_arg(p: argparse.ArgumentParser, help: str = CHECKPOINT_HELP) -> None:
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help=help)


def add_dir_args(p: argparse.ArgumentParser, input_help: str, out_help: str) -> None:
    """``--input DIR --out DIR``, both required: a whole-folder command."""
    p.add_argument("--input", required=True, metavar="DIR", help=input_help)
    p.add_argument("--out", required=True, metavar="DIR", help=out_help)


def add_spacing_arg(p: argparse.ArgumentParser, help: str, default: Sequence[float] = (1.0, 1.0, 1.0)) -> None:
    p.add_argument("--spacing", nargs=3, type=float, default=list(default), metavar=("X", "Y", "Z"), help=help)


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision auto|bf16|fp32`` (rtseg predict, val, test; the node's ``precision`` key)."""
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="what the network computes in: auto (default: bf16 on a GPU and on CPUs with native bf16, "
                   "AVX512-BF16 or AMX; fp32 elsewhere), bf16, or fp32 (the reference; ~2x slower on such CPUs)")


def organ_class_names(organs: Sequence[str], option: str) -> list[str]:
    """Organ names for labels 1..N (a leading 'background' accepted) -> class names with background first."""
    names = list(organs[1:] if organs and organs[0].lower() == BACKGROUND else organs)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"{option}: name each organ once, in label order (labels 1, 2, ...), got {list(organs)}")
    return [BACKGROUND, *names]


def run_command(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; a user mistake (RtsegError) is one line ``rtseg CMD: error: ...``, exit 2."""
    try:
        return int(args.func(args) or 0)
    except RtsegError as exc:
        print(f"rtseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rtseg {args.command}: interrupted", file=sys.stderr)
        return 130


def doc_body(doc: str | None) -> str:
    """A command module's docstring without its summary line: the command's ``--help`` description."""
    return (doc or "").partition("\n\n")[2].strip()
