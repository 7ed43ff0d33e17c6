"""Every ``rtseg`` command and conversion answers ``--help``, and every option there explains itself."""
from __future__ import annotations

import argparse

import pytest

from rtseg.cli.common import organ_class_names
from rtseg.cli.main import build_parser, main
from rtseg.errors import ConfigError


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(argv prefix, parser) for every leaf command, following nested subcommands (``rtseg convert X``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(prefix, parser)]
    out = []
    for name, sub in subs[0].choices.items():
        if name in [c.dest for c in subs[0]._choices_actions]:  # canonical names only, aliases below
            out += _commands(sub, (*prefix, name))
    return out


COMMANDS = _commands(build_parser())


def test_every_command_is_found() -> None:
    names = {" ".join(argv) for argv, _ in COMMANDS}
    assert {"train", "val", "test", "evaluate", "phantoms", "visualize", "predict", "export", "plan", "demo"} <= names
    assert {"convert dicom-to-nifti", "convert nifti-to-legacy-npy", "convert legacy-npy-to-nifti"} <= names


@pytest.mark.parametrize("argv", [argv for argv, _ in COMMANDS], ids=" ".join)
def test_help_of_every_command(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: rtseg {' '.join(argv)}")
    parser = dict(COMMANDS)[argv]
    assert parser.description, f"rtseg {' '.join(argv)} has no description"
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, f"rtseg {' '.join(argv)} {action.option_strings} has no help text"
        for flag in action.option_strings:
            assert flag in out


@pytest.mark.parametrize("old, new", [("nifti-to-seed", "nifti-to-legacy-npy"), ("seed-to-nifti", "legacy-npy-to-nifti")])
def test_old_conversion_names_still_run_the_same_command(old: str, new: str) -> None:
    parser = build_parser()
    a = parser.parse_args(["convert", old, "--input", "i", "--out", "o"])
    b = parser.parse_args(["convert", new, "--input", "i", "--out", "o"])
    assert a.func is b.func and vars(a) | {"conversion": None} == vars(b) | {"conversion": None}


def test_old_phantom_layout_name_is_accepted() -> None:
    args = build_parser().parse_args(["phantoms", "--out", "o", "--cases", "2", "--layout", "seed"])
    assert args.layout == "legacy_npy"


def test_organ_class_names() -> None:
    assert organ_class_names(["bladder", "rectum"], "--labels") == ["background", "bladder", "rectum"]
    assert organ_class_names(["Background", "bladder"], "--labels") == ["background", "bladder"]
    for bad in ([], ["background"], ["bladder", "bladder"]):
        with pytest.raises(ConfigError, match="--classes: name each organ once"):
            organ_class_names(bad, "--classes")
