"""Every ``rtseg ...`` command line the README shows is accepted by the CLI parser (options spelt as they are)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from rtseg.cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_commands() -> list[str]:
    """Command lines of the README's bash blocks: continuations joined, comments dropped."""
    commands, block, pending = [], False, ""
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            block = line.strip() == "```bash"
            continue
        if not block:
            continue
        text = pending + line.split("  #")[0].split(" # ")[0].strip()
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        commands += [c.strip() for c in text.split(";") if c.strip().startswith("rtseg ")]
    return commands


def test_the_readme_shows_the_commands() -> None:
    shown = {shlex.split(c)[1] for c in _readme_commands()}
    assert {"train", "predict", "convert", "evaluate", "serve", "review", "phantoms", "visualize"} <= shown


@pytest.mark.parametrize("command", _readme_commands())
def test_readme_command_parses(command: str) -> None:
    build_parser().parse_args(shlex.split(command)[1:])  # argparse exits (fails the test) on a bad option
