"""Every ``rtseg ...`` command line the README (and docs/COMMISSIONING.md) shows in a bash block is accepted by the
CLI parser (options spelt as they are)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from rtseg.cli.main import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
COMMISSIONING = README.parent / "docs" / "COMMISSIONING.md"


def _readme_commands(doc: Path = README) -> list[str]:
    """Command lines of the document's bash blocks: continuations joined, comments dropped."""
    commands, block, pending = [], False, ""
    for line in doc.read_text(encoding="utf-8").splitlines():
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


@pytest.mark.parametrize("command", _readme_commands() + _readme_commands(COMMISSIONING))
def test_readme_command_parses(command: str) -> None:
    build_parser().parse_args(shlex.split(command)[1:])  # argparse exits (fails the test) on a bad option


def test_commissioning_shows_the_validation_commands() -> None:
    shown = {" ".join(shlex.split(c)[1:3]) for c in _readme_commands(COMMISSIONING)}
    assert {"convert dicom-dataset", "evaluate --pred", "review --ct"} <= shown
