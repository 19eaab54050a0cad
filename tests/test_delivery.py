"""The one send use case (bulletin/delivery): outcome → exit code and sentences, lock held."""

from __future__ import annotations

import pytest

from bulletin.delivery import SendOutcome, deliver
from bulletin.errors import ExitCode
from bulletin.ledger.states import State
from bulletin.send import Report, SendLock, send_lock


def report(**fields) -> Report:
    made = Report(7)
    made.counts = {State.UNKNOWN.value: 0}
    for name, value in fields.items():
        setattr(made, name, value)
    return made


def test_a_clean_send_exits_0_and_says_so():
    outcome = SendOutcome(report(accepted=3), "sendgrid")
    assert outcome.exit_code == ExitCode.OK
    assert outcome.summary == "Send #7: 3 accepted, 0 failed, 0 unknown, 0 still pending."
    assert outcome.brief("messages/m.md", resumed=False) == (
        "Sent messages/m.md (send #7): 3 accepted, 0 failed, 0 unknown"
    )
    assert outcome.details == []


def test_failures_and_unknowns_are_partial_and_listed():
    outcome = SendOutcome(
        report(accepted=1, failed=[("a@example.org", "550")], stale_unknown=["b@example.org"]),
        "outbox",
    )
    assert outcome.exit_code == ExitCode.PARTIAL
    assert "1 written to the outbox, 1 failed, 1 unknown" in outcome.summary
    assert outcome.details[0].startswith("unknown: b@example.org (an earlier run stopped")
    assert outcome.details[1] == "failed: a@example.org: 550"


def test_unknown_rows_left_from_before_make_a_finished_send_partial():
    outcome = SendOutcome(report(counts={State.UNKNOWN.value: 2}), "smtp", nothing_to_send=True)
    assert outcome.exit_code == ExitCode.PARTIAL
    assert outcome.summary.startswith("Nothing to send: send #7 has no pending recipients; 2")


def test_an_interrupted_send_exits_with_the_interrupted_code():
    assert SendOutcome(report(interrupted=True), "smtp").exit_code == ExitCode.INTERRUPTED


def test_deliver_needs_the_send_lock_held(db_path):
    with send_lock(db_path) as held:
        assert held.held
    assert not held.held
    with pytest.raises(RuntimeError, match="send lock"):
        deliver(None, None, SendLock(db_path, held=False))  # type: ignore[arg-type]
