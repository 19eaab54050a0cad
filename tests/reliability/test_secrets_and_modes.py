"""Secrets never leak; private files are private.

Canary values stand in for the SendGrid API key (read from .env), the SMTP password and
BULLETIN_SECRET. Every failing command that handles them — a refused key (401), SendGrid down,
retries exhausted, a refused SMTP login, an unreachable SMTP server, `bulletin run --verbose`
with its log file, and the same with BULLETIN_DEBUG=1 tracebacks — is run as a real process;
no canary may appear in its output, its log, the tracking database, the outbox or what the
servers were sent (bar the key in SendGrid's Authorization header, where it belongs).
The tracking database (and its -wal/-shm), the lock file and outbox files are 0600 and the
outbox folder 0700, even under umask 000.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from reliability_harness import raw_bytes, run
from servers import SmtpSink, free_port, status

API_KEY = "SG.canary-api-key-4f1d9e"
SMTP_PASSWORD = "canary-smtp-pass-83e2b7"
SECRET = "canary-hmac-secret-0c5a11-0123456789"
CANARIES = (API_KEY, SMTP_PASSWORD, SECRET)
SCHEDULED = """\
---
subject: "Street safety"
from: "Bromley Police <bromley.neighbourhoods@example.org>"
send_at: "2026-07-06T07:30"
---
Dear {{ first_name or "Neighbour" }}, please report all hate crime to 999 or 101.
"""


def assert_no_canary(where: str, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    leaked = [c for c in CANARIES if c.encode() in data]
    assert not leaked, f"{leaked} leaked into {where}"


@pytest.fixture
def canary_env(workdir, monkeypatch):
    """The key in .env (as a user keeps it), the other secrets in the environment."""
    (workdir / ".env").write_text(f"SENDGRID_API_KEY={API_KEY}\n", encoding="utf-8")
    monkeypatch.setenv("BULLETIN_SECRET", SECRET)
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", "https://bulletin.example.org")
    monkeypatch.setenv("BULLETIN_RETRY_MAX_WAIT", "0.01")
    monkeypatch.setenv("BULLETIN_RETRIES", "1")
    monkeypatch.setenv("BULLETIN_TIMEOUT", "2")
    monkeypatch.setenv("BULLETIN_LOG", str(workdir / "bulletin.log"))
    monkeypatch.delenv("BULLETIN_DEBUG", raising=False)
    return workdir


def failing_commands(workdir, monkeypatch, sendgrid_server, debug: bool):
    """(what, CompletedProcess) for each failure that handles a secret."""
    if debug:
        monkeypatch.setenv("BULLETIN_DEBUG", "1")
    (workdir / "messages" / "street.md").write_text(SCHEDULED, encoding="utf-8")
    monkeypatch.setenv("BULLETIN_SENDGRID_URL", sendgrid_server.url)
    sendgrid_server.set_api_key("SG.the-right-key")
    yield "401 refused key", run(workdir, "send", "eu-referendum", "--yes")
    yield "run --verbose, 401", run(workdir, "run", "--verbose", "--now", "2026-07-06T07:31")
    sendgrid_server.set_api_key(API_KEY)
    sendgrid_server.script(*[status(503)] * 2)
    yield "503 retries exhausted", run(workdir, "send", "eu-referendum", "--yes")
    monkeypatch.setenv("BULLETIN_SENDGRID_URL", f"http://127.0.0.1:{free_port()}")
    yield "SendGrid down", run(workdir, "send", "eu-referendum", "--yes")
    yield (
        "test copy, SendGrid down",
        run(workdir, "send", "eu-referendum", "--test", "staff@example.org"),
    )
    monkeypatch.setenv("BULLETIN_TRANSPORT", "smtp")
    monkeypatch.setenv("SMTP_USERNAME", "bulletin")
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("SMTP_SECURITY", "none")
    with SmtpSink(auth=("bulletin", "the-right-password")) as sink:
        monkeypatch.setenv("SMTP_HOST", sink.host)
        monkeypatch.setenv("SMTP_PORT", str(sink.port))
        yield "SMTP login refused", run(workdir, "send", "eu-referendum", "--yes")
        assert sink.auth_attempts and not sink.auth_attempts[0][1]
    monkeypatch.setenv("SMTP_PORT", str(free_port()))
    yield "SMTP down", run(workdir, "send", "eu-referendum", "--yes")
    yield "run --verbose, SMTP down", run(workdir, "run", "--verbose", "--now", "2026-07-06T07:32")


@pytest.mark.parametrize(
    "debug",
    [False, pytest.param(True, marks=pytest.mark.slow)],  # every failing command again (~15 s)
    ids=["plain", "BULLETIN_DEBUG"],
)
def test_no_failing_command_shows_a_secret(canary_env, sendgrid_server, monkeypatch, debug):
    workdir = canary_env
    codes = {}
    for what, result in failing_commands(workdir, monkeypatch, sendgrid_server, debug):
        codes[what] = result.returncode
        assert_no_canary(f"{what} output", result.stdout + result.stderr)
        assert result.stderr.strip()  # it did explain what went wrong
    assert set(codes.values()) <= {3, 4, 1}, codes
    assert codes["401 refused key"] == 4 and codes["SMTP login refused"] == 4
    assert_no_canary("the run log", (workdir / "bulletin.log").read_bytes())
    assert_no_canary("the tracking database", raw_bytes(workdir / "bulletin.db"))
    for request in sendgrid_server.accepted:
        assert_no_canary("a SendGrid request body", json.dumps(request.get("body")))


def test_secrets_stay_out_of_what_is_sent_and_stored(canary_env, cli, sendgrid_env, monkeypatch):
    sendgrid_env.set_api_key(API_KEY)
    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
    cli("send", "eu-referendum", "--yes")
    (request,) = sendgrid_env.accepted
    assert_no_canary("the SendGrid request body", json.dumps(request["body"]))
    monkeypatch.setenv("BULLETIN_TRANSPORT", "outbox")
    cli("send", "eu-referendum", "--yes", "--new-send")
    for path in (canary_env / "outbox").glob("*.eml"):
        assert_no_canary(path.name, path.read_bytes())
    assert_no_canary("status --json", cli("status", "--json").stdout)
    assert_no_canary("the tracking database", raw_bytes(canary_env / "bulletin.db"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_files_are_private_even_under_umask_000(workdir):
    result = run(workdir, "send", "eu-referendum", "--yes", preexec_fn=lambda: os.umask(0))
    assert result.returncode == 0, result.stderr
    db = workdir / "bulletin.db"
    assert mode(db) == 0o600
    for suffix in ("-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():  # SQLite gives them the database's mode
            assert mode(Path(f"{db}{suffix}")) == 0o600
    assert mode(workdir / "bulletin.db.lock") == 0o600
    outbox = workdir / "outbox"
    assert mode(outbox) == 0o700
    files = list(outbox.glob("*.eml"))
    assert files and {mode(f) for f in files} == {0o600}
