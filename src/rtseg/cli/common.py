"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse
from pathlib import Path

from rtseg.config import Config, load_config


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="CFG", help="YAML config in the seed's format (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, repeatable, e.g. --set TRAINING.ITER_MAX=200 --set MODEL.BASE_FILTERS=16")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def config_name(path: str) -> str:
    return Path(path).name.removesuffix(".yml").removesuffix(".yaml")
