"""`bulletin suppress add|remove|list` and how every send honours the do-not-send list."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from test_send import SAMPLE, deliveries, outbox_recipients, people, states, street_message

# Every test here runs on SQLite and on PostgreSQL (tests/backends.py).
pytestmark = pytest.mark.usefixtures("backend")


def test_add_list_remove(workdir, cli):
    result = cli("suppress", "add", "Priya.Raman@Example.NET", "--reason", "asked by phone")
    assert "suppressed" in result.stdout
    assert "already suppressed" in cli("suppress", "add", "priya.raman@example.net").stdout
    cli("suppress", "add", "david.oneill@example.com")

    result = cli("suppress", "list", env={"COLUMNS": "200"})
    assert "2 suppressed address(es)" in result.stdout
    table = [re.split(r"\s{2,}", line) for line in result.stdout.splitlines()[:-1]]
    assert table[0] == ["email", "reason", "added", "source"]
    rows = {row[0]: row[1:] for row in table[1:]}
    reason, added, source = rows["Priya.Raman@Example.NET"]
    assert (reason, source) == ("asked by phone", "manual")
    assert added.startswith(datetime.now().astimezone().strftime("%Y-%m-%d"))
    assert rows["david.oneill@example.com"][0] == "manual"

    assert "removed" in cli("suppress", "remove", "PRIYA.RAMAN@example.net").stdout
    assert "was not on the list" in cli("suppress", "remove", "priya.raman@example.net").stdout
    result = cli("suppress", "list")
    assert "1 suppressed address(es)" in result.stdout
    assert "priya" not in result.stdout.lower()


def test_list_on_a_fresh_folder(workdir, cli):
    result = cli("suppress", "list")
    assert result.stdout == "0 suppressed address(es)\n"


def test_suppressed_addresses_are_skipped_and_counted(workdir, cli, backend):
    cli("suppress", "add", "priya.raman@example.net", "margaret.okafor@example.org")
    result = cli("send", "eu-referendum", "--yes")
    assert "Skipped:   2 suppressed" in result.stderr
    assert f"Audience:  {SAMPLE - 2} email recipient(s)" in result.stderr
    sent = {a.lower() for a in outbox_recipients(workdir)}
    assert len(sent) == SAMPLE - 2
    assert not {"priya.raman@example.net", "margaret.okafor@example.org"} & sent
    assert "priya.raman@example.net" not in deliveries(backend)


def test_suppressed_through_the_sendgrid_transport(workdir, cli, sendgrid_env):
    cli("suppress", "add", "priya.raman@example.net")
    cli("send", "eu-referendum", "--yes")
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == SAMPLE - 1 and "priya.raman@example.net" not in delivered


def test_a_pending_recipient_suppressed_between_runs_is_dropped(workdir, cli, backend):
    name = street_message(workdir, people(6))
    cli("send", name, "--yes", "--limit", "2")
    cli("suppress", "add", "person00002@example.org")  # already sent: stays accepted
    cli("suppress", "add", "person00005@example.org", "--reason", "moved away")
    result = cli("send", name, "--yes")
    assert "1 dropped (suppressed)" in result.stdout
    rows = deliveries(backend)
    assert rows["person00005@example.org"]["state"] == "dropped"
    assert rows["person00005@example.org"]["error"] == "suppressed: moved away"
    assert rows["person00002@example.org"]["state"] == "accepted"
    assert states(backend) == {"accepted": 5, "dropped": 1}
    sent = outbox_recipients(workdir)
    assert "person00005@example.org" not in sent and len(sent) == len(set(sent)) == 5


def test_removing_a_suppression_lets_later_sends_reach_the_address(workdir, cli):
    cli("suppress", "add", "priya.raman@example.net")
    name = street_message(
        workdir, [*people(2), {**people(1)[0], "email": "priya.raman@example.net"}]
    )
    cli("send", name, "--yes")
    assert "priya.raman@example.net" not in outbox_recipients(workdir)
    cli("suppress", "remove", "priya.raman@example.net")
    cli("send", "eu-referendum", "--yes")
    assert "priya.raman@example.net" in outbox_recipients(workdir)
