"""The SMTP transport against a real aiosmtpd server on 127.0.0.1 (tests/servers.py SmtpSink).

Tests that read the tracking database run on SQLite and PostgreSQL (the `backend` fixture).
"""

from __future__ import annotations

import threading

import pytest
from servers import SmtpSink, data_reply, drop_mid_data
from test_send import SAMPLE, deliveries, people, states, street_message

USER, PASSWORD = "bulletin", "smtp-password-canary-5c1e"


@pytest.fixture
def smtp_auth(monkeypatch):
    """A sink that requires AUTH LOGIN/PLAIN; one login per connection lets us count them."""
    with SmtpSink(auth=(USER, PASSWORD)) as sink:
        for name, value in {
            "BULLETIN_TRANSPORT": "smtp",
            "SMTP_HOST": sink.host,
            "SMTP_PORT": str(sink.port),
            "SMTP_SECURITY": "none",
            "SMTP_CONNECTIONS": "1",
            "SMTP_USERNAME": USER,
            "SMTP_PASSWORD": PASSWORD,
            "BULLETIN_SECRET": "smtp-test-secret-not-a-real-one-0123456789",
            "BULLETIN_PUBLIC_URL": "https://bulletin.example.org",
            "BULLETIN_RETRY_MAX_WAIT": "0.05",
            "BULLETIN_TIMEOUT": "2",
        }.items():
            monkeypatch.setenv(name, value)
        yield sink


def connections(sink: SmtpSink) -> int:
    return sum(1 for _user, ok in sink.auth_attempts if ok)


def test_one_connection_carries_every_message(workdir, cli, smtp_auth):
    name = street_message(workdir, people(120))
    result = cli("send", name, "--yes")
    assert "120 accepted" in result.stdout
    assert connections(smtp_auth) == 1
    delivered = smtp_auth.delivered_emails()
    assert len(delivered) == 120 and set(delivered.values()) == {1}


def test_parallel_connections_each_carry_many_messages_and_nobody_gets_two(
    workdir, cli, smtp_auth, monkeypatch, backend
):
    monkeypatch.setenv("SMTP_CONNECTIONS", "3")
    name = street_message(workdir, people(120))
    result = cli("send", name, "--yes")
    assert "120 accepted" in result.stdout
    assert "3 connections" in result.stderr
    assert connections(smtp_auth) == 3
    delivered = smtp_auth.delivered_emails()
    assert len(delivered) == 120 and set(delivered.values()) == {1}
    assert states(backend) == {"accepted": 120}


def test_each_message_is_a_full_personal_mime_message(workdir, cli, smtp_env, backend):
    cli("send", "eu-referendum", "--yes")
    rows = deliveries(backend)
    assert len(smtp_env.messages) == SAMPLE
    for (sender, recipients, _raw), mail in zip(smtp_env.messages, smtp_env.parsed(), strict=True):
        (address,) = recipients
        row = rows[address.lower()]
        assert sender == "bromley.neighbourhoods@example.org"
        assert mail["To"].addresses[0].addr_spec == address
        assert mail.get_content_type() == "multipart/alternative"
        assert mail["List-Unsubscribe"].startswith("<https://bulletin.example.org/unsubscribe?t=")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert mail["X-Bulletin-Delivery"] == str(row["id"])
        assert mail["X-Bulletin-Send"] == "1"
        assert mail["Message-ID"] == row["message_id"]
        first = row["first_name"] or "Co-ordinator"
        assert f"Dear {first}," in mail.get_body(("plain",)).get_content()


def test_login_with_good_credentials(workdir, cli, smtp_auth):
    cli("send", "eu-referendum", "--yes")
    assert smtp_auth.auth_attempts == [(USER, True)]
    assert len(smtp_auth.delivered_emails()) == SAMPLE


def test_bad_credentials_stop_the_send_naming_the_settings(
    workdir, cli, smtp_auth, monkeypatch, backend
):
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-password-canary-0d4e")
    result = cli("send", "eu-referendum", "--yes", expect=4)
    assert "SMTP_USERNAME / SMTP_PASSWORD" in result.stderr
    assert "wrong-password-canary-0d4e" not in result.stdout + result.stderr
    assert not smtp_auth.messages
    assert states(backend) == {"pending": SAMPLE}


def test_an_unreachable_server_is_exit_4(workdir, cli, smtp_env, backend):
    smtp_env.stop()
    result = cli("send", "eu-referendum", "--yes", expect=4)
    assert f"cannot connect to the SMTP server {smtp_env.host}:{smtp_env.port}" in result.stderr
    assert not backend.written() or states(backend) == {"pending": SAMPLE}


def test_a_550_recipient_fails_alone_and_the_send_exits_3(workdir, cli, smtp_env, backend):
    smtp_env.fail_recipient("priya.raman@example.net", 550, "5.1.1 No such user")
    result = cli("send", "eu-referendum", "--yes", expect=3)
    assert "failed: priya.raman@example.net: 550 5.1.1 No such user" in result.stderr
    rows = deliveries(backend)
    assert rows["priya.raman@example.net"]["state"] == "failed"
    assert states(backend) == {"accepted": SAMPLE - 1, "failed": 1}
    assert len(smtp_env.delivered_emails()) == SAMPLE - 1


def test_a_550_at_data_fails_that_message_only(workdir, cli, smtp_env, backend):
    smtp_env.script(data_reply(250), data_reply(550))
    cli("send", "eu-referendum", "--yes", expect=3)
    assert states(backend) == {"accepted": SAMPLE - 1, "failed": 1}
    assert len(smtp_env.delivered_emails()) == SAMPLE - 1


def test_a_451_is_retried_then_accepted(workdir, cli, smtp_env, backend):
    smtp_env.script(data_reply(250), data_reply(451), data_reply(451))
    smtp_env.fail_recipient("david.oneill@example.com", 451, "4.2.1 Mailbox busy", times=2)
    cli("send", "eu-referendum", "--yes")
    delivered = smtp_env.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}
    assert states(backend) == {"accepted": SAMPLE}


def test_a_421_closes_the_connection_and_the_transport_reconnects(workdir, cli, smtp_auth):
    smtp_auth.script(data_reply(250), data_reply(250), data_reply(421))
    cli("send", "eu-referendum", "--yes")
    assert connections(smtp_auth) == 2
    delivered = smtp_auth.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}


def test_a_connection_dropped_mid_data_is_retried_without_a_duplicate(
    workdir, cli, smtp_auth, backend
):
    smtp_auth.script(data_reply(250), drop_mid_data(), drop_mid_data())
    cli("send", "eu-referendum", "--yes")
    assert connections(smtp_auth) == 3
    delivered = smtp_auth.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}
    assert states(backend) == {"accepted": SAMPLE}


def test_persistent_temporary_failures_leave_the_recipient_pending(workdir, cli, smtp_env, backend):
    smtp_env.fail_recipient("priya.raman@example.net", 451, "4.2.1 Mailbox busy")
    result = cli("send", "eu-referendum", "--yes")
    assert "1 still pending" in result.stdout
    row = deliveries(backend)["priya.raman@example.net"]
    assert row["state"] == "pending" and "451" in row["error"]

    smtp_env.reset()
    cli("send", "eu-referendum", "--yes")
    assert smtp_env.delivered_emails() == {"priya.raman@example.net": 1}


class _FirstLoginOnly:
    """The sink's credentials, accepted once: the password is changed after the first login."""

    def __init__(self, credentials: tuple[str, str]) -> None:
        self.credentials = credentials
        self.used = False

    def __eq__(self, other: object) -> bool:
        if self.used or other != self.credentials:
            return False
        self.used = True
        return True

    __hash__ = None  # type: ignore[assignment]


def test_a_failed_reconnect_mid_batch_keeps_what_was_already_accepted(
    workdir, cli, smtp_auth, backend
):
    smtp_auth.auth = _FirstLoginOnly((USER, PASSWORD))
    smtp_auth.script(*[data_reply(250)] * 9, data_reply(421))  # the 10th message: reconnect
    result = cli("send", "eu-referendum", "--yes", expect=4)
    assert "SMTP_USERNAME / SMTP_PASSWORD" in result.stderr
    db = backend
    assert states(db) == {"accepted": 9, "pending": SAMPLE - 9}
    first = set(smtp_auth.delivered_emails())

    smtp_auth.auth = (USER, PASSWORD)
    cli("send", "eu-referendum", "--yes")
    delivered = smtp_auth.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}
    assert first < set(delivered)


def test_an_interrupt_abandons_the_rest_of_the_batch(workdir, smtp_env, backend):
    """Ctrl-C (the waiter's stop event, as the signal handler sets it) mid-batch."""
    from bulletin.check import check_message
    from bulletin.config import load_settings
    from bulletin.send import execute, plan_send
    from bulletin.transports import Waiter

    name = street_message(workdir, people(120))
    settings = load_settings(workdir)
    waiter = Waiter()

    def interrupt_after_three() -> None:
        while len(smtp_env.messages) < 3 and not waiter.stop.wait(0.001):
            pass
        waiter.stop.set()

    watcher = threading.Thread(target=interrupt_after_three)
    watcher.start()
    try:
        plan = plan_send(check_message(name, settings), settings, waiter=waiter)
        report = execute(plan, settings, waiter=waiter)
    finally:
        waiter.stop.set()
        watcher.join(timeout=10)
    assert report.interrupted
    sent = len(smtp_env.messages)
    assert 3 <= sent < 50  # the first batch of 50 was not finished
    assert states(backend) == {"accepted": sent, "pending": 120 - sent}
