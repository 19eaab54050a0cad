"""Crash safety: kill, interrupt and race real `bulletin send` processes against the stand-in.

Each test runs `python -m bulletin send … --yes` as a subprocess pointed at the SendGrid
stand-in, then checks the stand-in's own log: nobody received two copies, and the tracking
database accounts for every address (accepted, or unknown if the process died mid-request).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import rate_limited, slow
from test_send import SAMPLE, deliveries, people, states, street_message

TIMEOUT = 60  # seconds any one process may take before the test fails


@pytest.fixture(autouse=True)
def one_request_at_a_time(monkeypatch):
    """These tests script the stand-in's answers request by request, so the requests go one at
    a time (BULLETIN_IN_FLIGHT=1); tests/test_in_flight.py crashes sends with several."""
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "1")


def start(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bulletin", "send", *args, "--yes"],
        cwd=workdir,
        env=dict(os.environ),  # the fixtures' settings: the stand-in, quick retries
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"bulletin send did not finish in {timeout} s\n{out}\n{err}")
    return process.returncode, out, err


def wait_for(condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def in_db(db: Path, state: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state = ?", (state,)
            ).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def accepted_in_db(db: Path) -> int:
    return in_db(db, "accepted")


def unknown_in_db(db: Path) -> int:
    return in_db(db, "unknown")


def assert_sent_once_and_accounted_for(sg, db: Path, audience: set[str]) -> None:
    """No duplicates in the stand-in's log; every address accepted, or unknown."""
    delivered = sg.delivered_emails()
    assert max(delivered.values()) == 1, [a for a, n in delivered.items() if n > 1][:5]
    rows = deliveries(db)
    assert set(rows) == audience
    accepted = {e for e, r in rows.items() if r["state"] == "accepted"}
    unknown = {e for e, r in rows.items() if r["state"] == "unknown"}
    assert accepted | unknown == audience
    assert accepted <= set(delivered)  # never recorded as accepted without the stand-in's 202
    assert set(delivered) <= audience


def test_sigkill_during_a_request_then_rerun(workdir, cli, sendgrid_env):
    sg, db = sendgrid_env, workdir / "bulletin.db"
    audience = {r["email"] for r in people(2100)}
    name = street_message(workdir, people(2100))
    sg.script(slow(0), slow(30))  # the second request hangs: the kill lands mid-request
    process = start(workdir, name)
    assert sg.wait_accepted(2, timeout=TIMEOUT)
    process.kill()
    assert process.wait(timeout=TIMEOUT) == -signal.SIGKILL
    assert states(db) == {"accepted": 1000, "sending": 1000, "pending": 100}

    result = cli("send", name, "--yes", expect=3)
    assert "unknown: person01001@example.org (an earlier run stopped mid-request" in result.stderr
    assert "Send #1: 100 accepted, 0 failed, 1000 unknown, 0 still pending." in result.stdout
    assert_sent_once_and_accounted_for(sg, db, audience)
    unknown = {e for e, r in deliveries(db).items() if r["state"] == "unknown"}
    assert unknown == set(sg.accepted[1]["emails"])

    cli("send", name, "--yes", expect=3)  # again: the unknown stay unknown (exit 3), none re-sent
    assert sg.requests == 3
    assert_sent_once_and_accounted_for(sg, db, audience)


def test_sigkill_between_batches_then_rerun(workdir, cli, sendgrid_env):
    sg, db = sendgrid_env, workdir / "bulletin.db"
    audience = {r["email"] for r in people(2100)}
    name = street_message(workdir, people(2100))
    process = start(workdir, name)
    # Kill the moment the first batch is recorded: the process is preparing the second.
    wait_for(lambda: accepted_in_db(db) >= 1000, "the first batch to be recorded")
    process.kill()
    assert process.wait(timeout=TIMEOUT) == -signal.SIGKILL
    before = states(db)
    assert before["accepted"] == 1000 and before.get("sending", 0) in (0, 1000)

    cli("send", name, "--yes", expect=3 if before.get("sending") else 0)
    assert_sent_once_and_accounted_for(sg, db, audience)
    assert states(db)["accepted"] >= 1100


@pytest.mark.parametrize("sessions", [1, 3])
def test_sigkill_during_an_smtp_send_loses_track_of_one_message_per_connection_at_most(
    workdir, cli, smtp_env, monkeypatch, sessions
):
    monkeypatch.setenv("SMTP_CONNECTIONS", str(sessions))
    db = workdir / "bulletin.db"
    audience = {r["email"] for r in people(200)}
    name = street_message(workdir, people(200))
    process = start(workdir, name)
    wait_for(lambda: len(smtp_env.messages) >= 20, "20 messages at the SMTP server")
    process.kill()
    assert process.wait(timeout=TIMEOUT) == -signal.SIGKILL

    in_flight = states(db).get("sending", 0)
    cli("send", name, "--yes", expect=3 if in_flight else 0)
    delivered = smtp_env.delivered_emails()
    assert max(delivered.values()) == 1
    rows = deliveries(db)
    accepted = {e for e, r in rows.items() if r["state"] == "accepted"}
    unknown = {e for e, r in rows.items() if r["state"] == "unknown"}
    assert accepted | unknown == audience
    assert accepted <= set(delivered)
    # Each message is recorded as its 250 arrives: only those in flight can be unknown.
    assert len(unknown) <= sessions


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_finishes_the_request_in_flight_records_it_and_says_how_to_resume(
    workdir, cli, sendgrid_env, signum
):
    sg, db = sendgrid_env, workdir / "bulletin.db"
    audience = {r["email"] for r in people(2100)}
    name = street_message(workdir, people(2100))
    sg.script(slow(0), slow(1))
    process = start(workdir, name)
    assert sg.wait_accepted(2, timeout=TIMEOUT)
    process.send_signal(signum)
    code, _out, err = finish(process)
    assert code == 130, err
    assert f"Run `bulletin send {name}` again to resume" in err
    assert "Traceback" not in err
    # The request in flight was answered and recorded; the third batch never went.
    assert states(db) == {"accepted": 2000, "pending": 100}
    assert sg.requests == 2

    result = cli("send", name, "--yes")
    assert "100 accepted" in result.stdout
    assert_sent_once_and_accounted_for(sg, db, audience)
    assert states(db) == {"accepted": 2100}


def test_a_second_ctrl_c_abandons_the_request_and_records_it_as_unknown(workdir, sendgrid_env):
    sg, db = sendgrid_env, workdir / "bulletin.db"
    sg.script(slow(30))
    process = start(workdir, "eu-referendum")
    assert sg.wait_accepted(1, timeout=TIMEOUT)
    # The first Ctrl-C asks it to finish the request, the next to stop now. A signal cannot
    # say when it was handled, so press again until the database shows the second one.
    deadline = time.monotonic() + TIMEOUT
    while unknown_in_db(db) == 0 and process.poll() is None and time.monotonic() < deadline:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.5)
    code, _out, err = finish(process)
    assert code == 130, err
    assert f"{SAMPLE} recipient(s) in flight are now unknown" in err
    assert "Run `bulletin send eu-referendum` again to resume" in err
    assert states(db) == {"unknown": SAMPLE}


def test_ctrl_c_while_waiting_out_a_rate_limit_stops_at_once(workdir, sendgrid_env, monkeypatch):
    sg, db = sendgrid_env, workdir / "bulletin.db"
    monkeypatch.setenv("BULLETIN_RETRY_MAX_WAIT", "60")
    sg.script(rate_limited(reset_in=60, retry_after=60))
    process = start(workdir, "eu-referendum")
    wait_for(lambda: sg.fault_log, "the 429 to be answered")
    process.send_signal(signal.SIGINT)
    code, _out, err = finish(process)
    assert code == 130, err
    assert "Run `bulletin send eu-referendum` again to resume" in err
    assert sg.requests == 1
    assert states(db) == {"pending": SAMPLE}


def test_two_sends_of_the_same_message_at_once_only_one_sends(workdir, sendgrid_env, monkeypatch):
    sg, db = sendgrid_env, workdir / "bulletin.db"
    monkeypatch.setenv("BULLETIN_TIMEOUT", "30")
    sg.script(slow(3))  # long enough for the second process to start and reach the lock
    first = start(workdir, "eu-referendum")
    assert sg.wait_accepted(1, timeout=TIMEOUT)  # the first holds the lock, mid-request
    second = start(workdir, "eu-referendum")
    code, _out, err = finish(second)
    assert code == 4
    assert "another bulletin send is running" in err
    code, out, err = finish(first)
    assert code == 0, err
    assert f"{SAMPLE} accepted" in out
    delivered = sg.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM sends").fetchone()[0] == 1


def test_sends_started_together_never_duplicate(workdir, sendgrid_env):
    sg = sendgrid_env
    processes = [start(workdir, "eu-referendum") for _ in range(3)]
    codes = [finish(p)[0] for p in processes]
    assert set(codes) <= {0, 4} and 0 in codes
    delivered = sg.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}
    assert states(workdir / "bulletin.db") == {"accepted": SAMPLE}
