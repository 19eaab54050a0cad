"""Small fixtures: a working folder made by `bulletin init`, and a CLI runner that fails loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulletin.cli import app
from bulletin.config import Settings, load_settings
from bulletin.workdir import init_workdir

ENV_PREFIXES = ("BULLETIN_", "SENDGRID_", "SMTP_")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own settings must never leak into a test."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `bulletin init`-ed folder, made the current directory."""
    folder = tmp_path / "work"
    folder.mkdir()
    init_workdir(folder)
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def settings(workdir: Path) -> Settings:
    return load_settings(workdir, environ={})


@pytest.fixture
def db_path(workdir: Path) -> Path:
    return workdir / "bulletin.db"


class Cli:
    """Runs bulletin in-process; an unexpected exit code fails the test with the output."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, expect: int = 0, input: str | None = None, env=None):
        result = self.runner.invoke(app, list(args), input=input, env=env,
                                    catch_exceptions=False)
        if result.exit_code != expect:
            raise AssertionError(
                f"bulletin {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
                f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}")
        return result


@pytest.fixture
def cli() -> Cli:
    return Cli()
