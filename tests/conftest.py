"""Small fixtures: a working folder made by `bulletin init`, and a CLI runner that fails loudly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from backends import backend  # noqa: F401  (runs a test on SQLite and PostgreSQL)
from browser import browser, page  # noqa: F401  (fixtures for headless Chromium tests)
from postgres import (  # noqa: F401
    ledger_databases,
    ledger_db,
    migrated_postgres_database,
    postgres_cluster,
    postgres_database,
    postgres_url,
)
from servers import SendGridStub, SmtpSink
from typer.testing import CliRunner

from bulletin.cli import app
from bulletin.config import Settings, load_settings
from bulletin.workdir import init_workdir

ENV_PREFIXES = ("BULLETIN_", "SENDGRID_", "SMTP_")
PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
)
API_KEY = "SG.test-key-canary-7f3a"
SECRET = "test-secret-canary-91b2-0123456789ab"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own settings (or a CI proxy) must never leak into a test."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIXES) or name in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `bulletin init --example`-ed folder (the example letter, the samples), made the cwd."""
    folder = tmp_path / "work"
    folder.mkdir()
    init_workdir(folder, example=True)
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def settings(workdir: Path) -> Settings:
    return load_settings(workdir, environ={})


@pytest.fixture
def db_path(workdir: Path) -> Path:
    return workdir / "bulletin.db"


@pytest.fixture
def sendgrid_server():
    """The SendGrid stand-in on 127.0.0.1 (tests/servers.py)."""
    with SendGridStub(api_key=API_KEY) as server:
        yield server


@pytest.fixture
def smtp_server():
    """A real aiosmtpd server on 127.0.0.1 collecting what it receives."""
    with SmtpSink() as server:
        yield server


@pytest.fixture
def sendgrid_env(sendgrid_server, monkeypatch: pytest.MonkeyPatch):
    """Environment that makes bulletin send through the stand-in, retrying quickly."""
    for name, value in {
        "SENDGRID_API_KEY": API_KEY,
        "BULLETIN_SENDGRID_URL": sendgrid_server.url,
        "BULLETIN_SECRET": SECRET,
        "BULLETIN_PUBLIC_URL": "https://bulletin.example.org",
        "BULLETIN_RETRY_MAX_WAIT": "0.05",
        "BULLETIN_TIMEOUT": "2",
    }.items():
        monkeypatch.setenv(name, value)
    return sendgrid_server


@pytest.fixture
def smtp_env(smtp_server, monkeypatch: pytest.MonkeyPatch):
    for name, value in {
        "BULLETIN_TRANSPORT": "smtp",
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
        "SMTP_SECURITY": "none",
        "SMTP_CONNECTIONS": "1",  # one session: scripted faults hit messages in a known order
        "BULLETIN_SECRET": SECRET,
        "BULLETIN_PUBLIC_URL": "https://bulletin.example.org",
        "BULLETIN_RETRY_MAX_WAIT": "0.05",
        "BULLETIN_TIMEOUT": "2",
    }.items():
        monkeypatch.setenv(name, value)
    return smtp_server


class Cli:
    """Runs bulletin in-process; an unexpected exit code fails the test with the output."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, expect: int = 0, input: str | None = None, env=None):
        result = self.runner.invoke(app, list(args), input=input, env=env, catch_exceptions=False)
        if result.exit_code != expect:
            raise AssertionError(
                f"bulletin {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
                f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
            )
        return result


@pytest.fixture
def cli() -> Cli:
    return Cli()
