"""`kill -9` at seeded-random points, then resume: nothing lost, nothing sent twice.

Each repetition starts a real `python -m bulletin` process against a loopback server, kills it
with SIGKILL at a point drawn from a seeded random schedule (while it starts up, mid-request,
between requests, while recording), resumes with the same command, and checks the ledger: the
server's own log against the tracking database. After a resume every recipient is `accepted`
(received exactly once) or `unknown` (the killed process never heard the answer; received at
most once, and never re-sent without --resend-unknown). The schedule is fixed by the seed, so
a failure can be replayed; `-m "slow or not slow"` adds a longer soak.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from reliability_harness import (
    assert_ledger,
    contacts_csv,
    integrity,
    start,
    states,
    use_contacts,
    wait_until,
)
from servers import SendGridStub, slow

from bulletin.cli import app

SEED = 8  # issue 8
REPEATS = 20
SOAK = 200
REQUEST_DELAY = 0.1  # every SendGrid answer takes this long: the process is often mid-request

SCHEDULED = """\
---
subject: "Street safety for {{ first_name or 'neighbours' }}"
from: "Bromley Police <bromley.neighbourhoods@example.org>"
send_at: "2026-07-06T07:30"
---
Dear {{ first_name or "Neighbour" }}, please report all hate crime to 999 or 101.
"""


def kill_points(seed: int, count: int, requests: int) -> list[tuple[int, float]]:
    """(wait for this many requests to reach the server, then this many seconds) per repeat."""
    rng = random.Random(seed)
    return [(rng.randint(0, requests), rng.uniform(0, 1.6 * REQUEST_DELAY)) for _ in range(count)]


def kill_at(process, server, point: tuple[int, float]) -> None:
    requests, delay = point
    wait_until(
        lambda: server_requests(server) >= requests or process.poll() is not None,
        f"request {requests} to reach the server",
    )
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def server_requests(server) -> int:
    """Requests (SendGrid) or messages (SMTP) the server has seen so far."""
    return server.requests if isinstance(server, SendGridStub) else len(server.messages)


def invoke(cli, *args: str):
    """The suite's in-process CLI runner, leaving the exit code to the caller."""
    return cli.runner.invoke(app, list(args), catch_exceptions=False)


def kill_and_resume(
    workdir, cli, server, db: Path, audience: set[str], args, point, *, again: bool = False
) -> dict:
    """One repetition; returns the state counts the killed process left behind."""
    process = start(workdir, *args)
    kill_at(process, server, point)
    if db.exists():
        assert integrity(db) == "ok"
    left = Counter(states(db).values())
    # The lock died with its holder: the same command resumes at once.
    result = invoke(cli, *args)
    assert result.exit_code in (0, 3), result.stderr
    assert "Traceback" not in result.stderr
    rows = states(db)
    assert_ledger(server.delivered_emails(), rows, audience, allowed=("accepted", "unknown"))
    assert (result.exit_code == 3) == ("unknown" in rows.values())
    if again:  # a third run sends nothing more
        received = server.delivered_emails()
        assert invoke(cli, *args).exit_code in (0, 3)
        assert server.delivered_emails() == received
    return dict(left)


def fresh_database(workdir: Path, monkeypatch, repeat: int) -> Path:
    """A database per repetition, so each one starts from nothing."""
    db = workdir / f"repeat-{repeat:03d}.db"
    monkeypatch.setenv("BULLETIN_DB", str(db))
    return db


def sendgrid_repeats(workdir, cli, sg, audience, monkeypatch, points, args) -> list[dict]:
    left = []
    for repeat, point in enumerate(points):
        db = fresh_database(workdir, monkeypatch, repeat)
        sg.reset()
        sg.script(*[slow(REQUEST_DELAY)] * 3)
        left.append(
            kill_and_resume(workdir, cli, sg, db, audience, args, point, again=repeat % 5 == 0)
        )
    return left


@pytest.mark.slow  # a kill -9 loop; tests/test_crash.py kills once in the default run
def test_kill_9_of_bulletin_send_at_random_points(
    workdir, cli, sendgrid_env, audience, monkeypatch
):
    points = kill_points(SEED, REPEATS, requests=3)
    args = ("send", "eu-referendum", "--yes")
    left = sendgrid_repeats(workdir, cli, sendgrid_env, audience, monkeypatch, points, args)
    # The schedule reached the interesting places: before any row, mid-request, and between.
    assert any(not counts for counts in left)
    assert any(counts.get("sending") for counts in left)


@pytest.mark.slow  # a kill -9 loop; tests/test_crash.py kills once in the default run
def test_kill_9_of_bulletin_run_at_random_points(workdir, cli, sendgrid_env, audience, monkeypatch):
    (workdir / "messages" / "eu-referendum.md").unlink()  # only the scheduled one is due
    (workdir / "messages" / "street.md").write_text(SCHEDULED, encoding="utf-8")
    points = kill_points(SEED + 1, REPEATS // 4, requests=3)
    args = ("run", "--now", "2026-07-06T07:31")
    left = sendgrid_repeats(workdir, cli, sendgrid_env, audience, monkeypatch, points, args)
    assert any(counts.get("sending") for counts in left)


@pytest.mark.slow  # a kill -9 loop; tests/test_crash.py kills once in the default run
def test_kill_9_of_an_smtp_send_at_random_points(workdir, cli, smtp_env, monkeypatch):
    audience = use_contacts(workdir, contacts_csv(150))  # three batches of 50 messages
    rng = random.Random(SEED + 2)
    args = ("send", "eu-referendum", "--yes")
    for repeat in range(REPEATS // 4):
        db = fresh_database(workdir, monkeypatch, repeat)
        smtp_env.reset()
        point = (rng.randint(0, 140), 0.0)
        kill_and_resume(workdir, cli, smtp_env, db, audience, args, point, again=repeat == 0)


@pytest.mark.slow  # a kill -9 loop; tests/test_crash.py kills once in the default run
def test_kill_9_of_an_outbox_send_leaves_only_whole_files(workdir, cli, monkeypatch):
    """The outbox writes each .eml atomically: a kill never leaves half a message behind."""
    from email import message_from_bytes, policy

    audience = use_contacts(workdir, contacts_csv(600))  # two batches of 500 files
    rng = random.Random(SEED + 3)
    for repeat in range(3):
        db = fresh_database(workdir, monkeypatch, repeat)
        outbox = workdir / f"outbox-{repeat}"
        monkeypatch.setenv("BULLETIN_OUTBOX", str(outbox))
        process = start(workdir, "send", "eu-referendum", "--yes")
        target = rng.randint(1, 500)
        wait_until(
            lambda o=outbox, p=process, n=target: (
                len(list(o.glob("*.eml"))) >= n or p.poll() is not None
            ),
            "files in the outbox",
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert invoke(cli, "send", "eu-referendum", "--yes").exit_code in (0, 3)
        rows = states(db)
        assert set(rows) == audience and set(rows.values()) <= {"accepted", "unknown"}
        files = sorted(outbox.glob("*.eml"))
        recipients = Counter(
            message_from_bytes(f.read_bytes(), policy=policy.default)["To"].addresses[0].addr_spec
            for f in files
        )
        assert max(recipients.values()) == 1
        assert {e for e, s in rows.items() if s == "accepted"} <= set(recipients)
        for file in files:  # every file is a whole message, ending with its closing boundary
            assert file.read_bytes().rstrip().endswith(b"--")


@pytest.mark.slow
def test_soak_kill_9_of_bulletin_send(workdir, cli, sendgrid_env, audience, monkeypatch):
    points = kill_points(SEED * 1000, SOAK, requests=3)
    args = ("send", "eu-referendum", "--yes")
    sendgrid_repeats(workdir, cli, sendgrid_env, audience, monkeypatch, points, args)
