"""Several `bulletin send` processes at once (issue 13), through the SendGrid stand-in.

PostgreSQL: four processes share one send (claims with FOR UPDATE SKIP LOCKED, each under its
lease) and nobody is mailed twice, even when one is SIGKILLed mid-request or the server drops
their connections. Both back ends: two different messages send at the same time.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest
from test_crash import finish as finish_within
from test_crash import start
from test_send import STREET, people, street_message, write_contacts

from bulletin.ledger.engine import make_engine
from bulletin.ledger.states import State
from bulletin.ledger.store import open_ledger

TIMEOUT = 240  # seconds any one process may take before the test fails
BIG = 20_000


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    return finish_within(process, TIMEOUT)


@pytest.fixture
def on_postgres(workdir, cli, postgres_database, monkeypatch) -> str:
    monkeypatch.setenv("BULLETIN_DB", postgres_database)
    cli("db", "upgrade")
    return postgres_database


def counts(url: str, message: str = "street"):
    with open_ledger(url) as ledger:
        (send,) = [s for s in ledger.sends() if s.message == message]
        return send, ledger.counts(send.id), list(ledger.delivery_rows(send.id))


@pytest.mark.slow  # ~30 s: four processes, 20,000 recipients
def test_four_processes_share_one_send_and_mail_everyone_once(
    workdir, sendgrid_env, on_postgres, monkeypatch
):
    monkeypatch.setenv("BULLETIN_TIMEOUT", "60")
    sendgrid_env.delay = 0.05
    name = street_message(workdir, people(BIG))
    processes = [start(workdir, name) for _ in range(4)]
    results = [finish(p) for p in processes]
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err for *_, err in results]
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == BIG and set(delivered.values()) == {1}
    send, by_state, _rows = counts(on_postgres)
    assert by_state[State.ACCEPTED] == BIG and send.completed_at  # one send, joined by all four
    assert sendgrid_env.requests == BIG // 1000
    with open_ledger(on_postgres) as ledger:
        assert ledger.holders(send.id) == []  # every process left its lease behind it


@pytest.mark.slow  # ~40 s
def test_one_of_four_killed_mid_request_the_rest_finish(
    workdir, sendgrid_env, on_postgres, monkeypatch
):
    monkeypatch.setenv("BULLETIN_TIMEOUT", "60")
    monkeypatch.setenv("BULLETIN_LEASE_SECONDS", "3")  # the dead holder is found out quickly
    sendgrid_env.delay = 0.5
    name = street_message(workdir, people(BIG))
    processes = [start(workdir, name) for _ in range(4)]
    victim = processes[0]
    _wait_until_in_flight(on_postgres, victim.pid)
    victim.kill()  # mid-request: it has batches claimed and 0.5 s per answer
    assert victim.wait(timeout=TIMEOUT) == -signal.SIGKILL
    results = [finish(p) for p in processes[1:]]
    assert {code for code, _, _ in results} <= {0, 3}, [err for *_, err in results]
    delivered = sendgrid_env.delivered_emails()
    assert max(delivered.values()) == 1  # nobody twice
    send, by_state, rows = counts(on_postgres)
    # The victim's in-flight rows became unknown once its lease expired; nothing is in doubt
    # beyond them, and the send is complete.
    assert by_state[State.SENDING] == by_state[State.PENDING] == 0 and send.completed_at
    assert by_state[State.ACCEPTED] + by_state[State.UNKNOWN] == BIG
    assert 0 < by_state[State.UNKNOWN] <= 4 * 1000
    accepted = {r.email_key for r in rows if r.state == State.ACCEPTED}
    assert accepted <= set(delivered)
    unknown = {r.email_key for r in rows if r.state == State.UNKNOWN}
    assert not unknown & accepted and len(set(delivered) - accepted) <= len(unknown)
    assert {r.lease for r in rows if r.state == State.UNKNOWN} == {
        next(r.lease for r in rows if r.state == State.UNKNOWN)
    }  # all the victim's


def _wait_until_in_flight(url: str, pid: int) -> None:
    """Until the process `pid` holds `sending` rows (claimed, its request on the way)."""
    from sqlalchemy import text

    engine = make_engine(url)
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            with engine.connect() as c:
                mine = c.execute(
                    text(
                        "SELECT count(*) FROM deliveries WHERE state = 'sending' AND lease LIKE :p"
                    ),
                    {"p": f"%:{pid}:%"},
                ).scalar_one()
            if mine:
                time.sleep(0.1)  # and its request has gone
                return
            time.sleep(0.05)
        pytest.fail(f"process {pid} never claimed a batch")
    finally:
        engine.dispose()


def test_lost_connections_mid_send_are_retried(workdir, sendgrid_env, on_postgres, monkeypatch):
    monkeypatch.setenv("BULLETIN_TIMEOUT", "60")
    sendgrid_env.delay = 0.4
    name = street_message(workdir, people(BIG))
    process = start(workdir, name)
    killer = make_engine(on_postgres)
    stop, killed = threading.Event(), []

    def terminate() -> None:  # the server drops bulletin's connections, now and again
        from sqlalchemy import text

        while not stop.wait(0.3):
            with killer.connect() as c:
                got = c.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'bulletin' AND pid <> pg_backend_pid()"
                    )
                ).all()
                killed.extend(got)
                c.commit()

    assert sendgrid_env.wait_accepted(1, timeout=TIMEOUT)
    thread = threading.Thread(target=terminate, daemon=True)
    thread.start()
    try:
        reached = sendgrid_env.wait_accepted(BIG // 1000 - 3, timeout=60)
        assert reached or process.poll() is None, finish(process)
    finally:
        stop.set()
        thread.join(timeout=10)
        killer.dispose()
    code, _out, err = finish(process)
    assert len(killed) >= 2, "the server dropped too few connections to prove anything"
    assert code == 0, err
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == BIG and set(delivered.values()) == {1}
    _send, by_state, _rows = counts(on_postgres)
    assert by_state[State.ACCEPTED] == BIG


def test_two_messages_send_at_the_same_time(workdir, cli, sendgrid_env, monkeypatch, ledger_db):
    monkeypatch.setenv("BULLETIN_TIMEOUT", "60")
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "1")
    monkeypatch.setenv("BULLETIN_DB", str(ledger_db))
    if "://" in str(ledger_db):
        cli("db", "upgrade")
    sendgrid_env.delay = 1.0  # five requests each: the first still sends as the second starts
    street = street_message(workdir, people(5000))
    write_contacts(workdir / "lists" / "other.csv", people(5000, domain="example.net"))
    other = STREET.replace("lists/people.csv", "lists/other.csv").replace("BR-TEST-1", "BR-TEST-2")
    (workdir / "messages" / "other.md").write_text(other, encoding="utf-8")
    first = start(workdir, street)
    assert sendgrid_env.wait_accepted(1, timeout=TIMEOUT)
    second = start(workdir, "other")  # while the first is mid-send: not refused
    (code1, out1, err1), (code2, out2, err2) = finish(first), finish(second)
    assert (code1, code2) == (0, 0), err1 + err2
    assert "5000 accepted" in out1 and "5000 accepted" in out2
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == 10_000 and set(delivered.values()) == {1}
    # One request in flight each, yet two at the stand-in at once: the sends overlapped.
    assert sendgrid_env.most_at_once == 2
