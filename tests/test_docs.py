"""Docs are tested (sqlite-utils style): every command has help and an example, and is in README."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main

from bulletin.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def walk(command, path: tuple[str, ...] = ()):
    """Every (path, command) below `command`; groups included."""
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield (*path, name), sub
        yield from walk(sub, (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))
LEAVES = [(path, c) for path, c in COMMANDS if not hasattr(c, "commands")]


def ids(items):
    return [" ".join(path) for path, _ in items]


def test_the_foundation_commands_exist():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"init", "new", "check", "contacts check", "contacts list", "preview", "print"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=ids(COMMANDS))
def test_every_command_has_help_text(path, command):
    assert (command.help or "").strip(), f"bulletin {' '.join(path)} has no help text"


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=ids(LEAVES))
def test_every_command_has_an_example_of_itself(path, command):
    examples = [ln.strip() for ln in command.help.splitlines() if ln.strip().startswith("Example:")]
    assert len(examples) == 1, command.help
    assert examples[0].startswith(f"Example: bulletin {' '.join(path)}")


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=ids(COMMANDS))
def test_help_runs(cli, path, command):
    result = cli(*path, "--help")
    assert "Usage:" in result.stdout
    first_line = " ".join(command.help.strip().splitlines()[0].split())
    assert first_line in " ".join(result.stdout.split())


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=ids(COMMANDS))
def test_every_command_is_in_the_readme(path, command):
    readme = README.read_text(encoding="utf-8")
    assert f"bulletin {' '.join(path)}" in readme, f"bulletin {' '.join(path)} is not in README.md"
