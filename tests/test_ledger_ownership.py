"""The ledger owns the database: nothing else imports a driver, writes SQL or spells a state."""

from __future__ import annotations

import re
from pathlib import Path

from bulletin.contacts import Contact
from bulletin.ledger.states import Cause, State
from bulletin.tracking import Tracker

PACKAGE = Path(__file__).parent.parent / "bulletin"
SQL = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET|PRAGMA)\b")
DRIVERS = re.compile(r"^\s*(import|from)\s+(sqlite3|sqlalchemy|alembic|psycopg)\b", re.MULTILINE)


def outside_the_ledger() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "ledger" not in p.relative_to(PACKAGE).parts]


def test_no_module_outside_the_ledger_imports_a_driver_or_writes_sql():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in outside_the_ledger()
        if DRIVERS.search(p.read_text()) or SQL.search(p.read_text())
    ]
    assert offenders == []


def test_a_suppressed_drop_carries_its_cause_in_a_column(db_path):
    people = [
        Contact(f"p{n}@example.org", {"first_name": "P", "last_name": "Q"}, "c.csv", n)
        for n in range(3)
    ]
    with Tracker(db_path) as ledger:
        send_id = ledger.create_send(
            message="m",
            path="messages/m.md",
            subject="S",
            reference="",
            category="",
            content_hash="h",
            transport="outbox",
        )
        ledger.add_recipients(send_id, people)
        ledger.suppress("p1@example.org", "asked by phone")
        assert ledger.drop_suppressed(send_id) == 1
        rows = {r.email: r for r in ledger.delivery_rows(send_id)}
        assert (
            rows["p1@example.org"].cause == Cause.SUPPRESSED and rows["p1@example.org"].suppressed
        )
        assert (
            rows["p0@example.org"].state == State.PENDING and rows["p0@example.org"].cause is None
        )
        counts = ledger.counts(send_id)
        assert counts[State.DROPPED] == 1 and counts.total == 3 and counts.of({State.PENDING}) == 2


def test_run_notices_live_in_the_ledger(db_path):
    with Tracker(db_path) as ledger:
        assert ledger.notices() == {}
        ledger.remember_notices(
            {"a": "2026-11-29T10:00:00+00:00", "b": "2026-11-29T10:05:00+00:00"}
        )
        ledger.remember_notices({"b": "2026-11-29T10:05:00+00:00"})
        assert ledger.notices() == {"b": "2026-11-29T10:05:00+00:00"}
