"""The tracking database (bulletin/tracking.py) and the send lock.

The ledger's operations run on a real SQLite file and on a real PostgreSQL server (the `backend`
fixture); what only a SQLite file has (its mode 0600, WAL, PRAGMA user_version, a corrupt or
locked file, the lock file beside it) is tested on SQLite alone.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from bulletin.contacts import Contact
from bulletin.send import Busy, send_lock
from bulletin.tracking import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DatabaseError,
    State,
    Tracker,
    email_hash,
)


def contacts(count: int) -> list[Contact]:
    return [
        Contact(
            f"person{n}@example.org",
            {"first_name": f"Person{n}", "last_name": "Example", "ward": "Penge and Cator"},
            "lists/people.csv",
            n + 1,
        )
        for n in range(1, count + 1)
    ]


def new_send(tracker: Tracker, message: str = "street") -> int:
    return tracker.create_send(
        message=message,
        path=f"messages/{message}.md",
        subject="Street safety",
        reference="BR-TEST",
        category="street-safety",
        content_hash="abc",
        transport="outbox",
    )


@pytest.fixture
def tracker(backend):
    with Tracker(backend.db) as tracker:
        yield tracker


def test_a_new_database_is_private_wal_and_at_the_latest_schema(db_path):
    with Tracker(db_path) as tracker:
        send_id = new_send(tracker)
        tracker.add_recipients(send_id, contacts(3))
        for suffix in ("", "-wal", "-shm"):
            path = db_path.with_name(db_path.name + suffix)
            assert path.stat().st_mode & 0o777 == 0o600, suffix
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 1


def test_reopening_keeps_the_data_and_does_not_migrate_again(backend):
    with Tracker(backend.db) as tracker:
        tracker.add_recipients(new_send(tracker), contacts(2))
    with Tracker(backend.db) as tracker:
        assert [s.message for s in tracker.sends()] == ["street"]
        assert tracker.counts(1)["pending"] == 2


def test_a_database_from_a_newer_bulletin_is_refused(db_path):
    with sqlite3.connect(db_path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(DatabaseError, match="newer bulletin"):
        Tracker(db_path)


def test_a_file_that_is_not_a_database_is_explained(db_path, cli, workdir):
    db_path.write_bytes(b"this is not SQLite, just some text " * 100)
    with pytest.raises(DatabaseError, match="not a bulletin database"):
        Tracker(db_path)
    result = cli("status", expect=4)
    assert "tracking database" in result.stderr and "Traceback" not in result.stderr


def test_a_database_locked_by_another_writer_is_explained(db_path):
    Tracker(db_path).close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with (
            Tracker(db_path, timeout=0.1) as tracker,
            pytest.raises(DatabaseError, match="another process holds it locked"),
        ):
            new_send(tracker)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_add_recipients_is_idempotent(tracker):
    send_id = new_send(tracker)
    assert tracker.add_recipients(send_id, contacts(3)) == 3
    assert tracker.add_recipients(send_id, contacts(5)) == 2
    assert tracker.counts(send_id)["pending"] == 5


def test_counts_cover_every_state_and_the_engagement_flags(tracker):
    send_id = new_send(tracker)
    tracker.add_recipients(send_id, contacts(2))
    counts = tracker.counts(send_id)
    assert set(counts) == {s.value for s in State} | {"opened", "clicked"}
    assert counts["pending"] == 2 and sum(counts[s.value] for s in State) == 2


def test_claims_from_two_connections_never_overlap(backend):
    with Tracker(backend.db) as tracker:
        send_id = new_send(tracker)
        tracker.add_recipients(send_id, contacts(400))
    claimed: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def worker(index: int) -> None:
        with Tracker(backend.db) as own:
            start.wait()
            while batch := own.claim(send_id, 7):
                claimed[index] += [c.id for c in batch]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not set(claimed[0]) & set(claimed[1])
    assert len(claimed[0]) + len(claimed[1]) == 400


def test_claim_respects_the_limit_and_the_cursor(tracker):
    send_id = new_send(tracker)
    tracker.add_recipients(send_id, contacts(5))
    first = tracker.claim(send_id, 2)
    assert [c.email for c in first] == ["person1@example.org", "person2@example.org"]
    assert tracker.counts(send_id)["sending"] == 2
    later = tracker.claim(send_id, 10, after=first[-1].id)
    assert len(later) == 3


def test_record_only_changes_recipients_still_in_flight(tracker):
    send_id = new_send(tracker)
    tracker.add_recipients(send_id, contacts(2))
    a, b = tracker.claim(send_id, 2)
    tracker.record([(a.id, State.ACCEPTED, "<m1@example.org>", None)])
    # A late or repeated outcome never overwrites a settled recipient…
    tracker.record([(a.id, State.FAILED, None, "late"), (b.id, State.FAILED, None, "550 no")])
    assert tracker.emails_in_state(send_id, State.ACCEPTED) == [a.email]
    assert tracker.emails_in_state(send_id, State.FAILED) == [b.email]
    rows = {r["email"]: r for r in tracker.delivery_rows(send_id)}
    assert rows[a.email]["message_id"] == "<m1@example.org>" and rows[a.email]["error"] is None
    assert rows[b.email]["error"] == "550 no"


def test_recipients_left_sending_become_unknown_and_back_only_on_request(tracker):
    send_id = new_send(tracker)
    tracker.add_recipients(send_id, contacts(3))
    tracker.claim(send_id, 2)
    assert tracker.stale_to_unknown(send_id) == ["person1@example.org", "person2@example.org"]
    assert tracker.counts(send_id)["unknown"] == 2
    assert tracker.claim(send_id, 10) != []  # only person3 is claimable
    assert tracker.counts(send_id)["unknown"] == 2
    assert tracker.unknown_to_pending(send_id) == 2
    assert tracker.counts(send_id)["pending"] == 2


def test_drop_suppressed_only_touches_pending_recipients(tracker):
    send_id = new_send(tracker)
    tracker.add_recipients(send_id, contacts(3))
    (first,) = tracker.claim(send_id, 1)
    tracker.record([(first.id, State.ACCEPTED, None, None)])
    tracker.suppress("PERSON1@example.org", "bounced", "event")
    tracker.suppress("person2@example.org ", "asked by phone")
    assert email_hash("person2@example.org") in tracker.suppressed_hashes()
    assert tracker.drop_suppressed(send_id) == 1
    rows = {r["email"]: r for r in tracker.delivery_rows(send_id)}
    assert rows["person1@example.org"]["state"] == "accepted"
    assert rows["person2@example.org"]["state"] == "dropped"
    assert rows["person2@example.org"]["error"] == "suppressed: asked by phone"
    assert rows["person3@example.org"]["state"] == "pending"


def test_a_send_is_completed_once_nobody_is_pending(tracker):
    send_id = new_send(tracker)
    tracker.add_recipients(send_id, contacts(1))
    assert tracker.complete_if_done(send_id) is False
    (claimed,) = tracker.claim(send_id, 1)
    assert tracker.complete_if_done(send_id) is False
    tracker.record([(claimed.id, State.ACCEPTED, None, None)])
    assert tracker.complete_if_done(send_id) is True
    assert tracker.get_send(send_id).completed_at is not None


def test_latest_send_is_per_message(tracker):
    first = new_send(tracker, "street")
    new_send(tracker, "other")
    third = new_send(tracker, "street")
    assert tracker.latest_send("street").id == third != first
    assert tracker.latest_send("missing") is None


def test_the_send_lock_admits_one_holder_and_names_it(db_path):
    busy = r"another bulletin send is running \(pid \d+\)"
    with send_lock(db_path), pytest.raises(Busy, match=busy) as caught, send_lock(db_path):
        pytest.fail("the lock was taken twice")
    assert caught.value.exit_code == 4
    with send_lock(db_path):  # released on exit
        pass
    assert (db_path.with_name(db_path.name + ".lock")).stat().st_mode & 0o777 == 0o600
