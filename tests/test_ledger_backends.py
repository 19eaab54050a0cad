"""The ledger's operations on both back ends: SQLite and a throw-away PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bulletin.contacts import Contact
from bulletin.errors import DatabaseError
from bulletin.events import Event, apply_events, unsubscribe_by_link
from bulletin.ledger.engine import is_postgres_url, make_engine
from bulletin.ledger.migrate import upgrade
from bulletin.ledger.states import Cause, State
from bulletin.ledger.store import open_ledger


def people(count: int) -> list[Contact]:
    return [
        Contact(
            f"person{n}@example.org",
            {"first_name": f"P{n}", "last_name": "Example", "ward": f"Ward {n % 3}"},
            "contacts/people.csv",
            n + 1,
        )
        for n in range(count)
    ]


@pytest.fixture
def ledger(ledger_db):
    if is_postgres_url(ledger_db):
        engine = make_engine(ledger_db)
        upgrade(engine)  # `bulletin db upgrade`
        engine.dispose()
    with open_ledger(ledger_db) as opened:
        yield opened


def new_send(ledger, message: str = "street") -> int:
    return ledger.create_send(
        message=message,
        path=f"messages/{message}.md",
        subject="Street safety",
        reference="BR-1",
        category="street",
        content_hash="abc",
        transport="sendgrid",
    )


def test_queue_claim_record_and_count(ledger):
    send_id = new_send(ledger)
    assert ledger.add_recipients(send_id, people(25)) == 25
    assert ledger.add_recipients(send_id, people(30)) == 5
    first = ledger.claim(send_id, 10)
    assert [c.email for c in first][:2] == ["person0@example.org", "person1@example.org"]
    later = ledger.claim(
        send_id, 100, first[-1].id, record=[(c.id, State.ACCEPTED, "m1", None) for c in first]
    )
    assert len(later) == 20
    ledger.record(
        [(c.id, State.FAILED, None, "550 no such user") for c in later[:2]]
        + [(c.id, State.ACCEPTED, "m2", None) for c in later[2:]]
    )
    counts = ledger.counts(send_id)
    assert counts[State.ACCEPTED] == 28 and counts[State.FAILED] == 2 and counts.total == 30
    assert ledger.complete_if_done(send_id)
    assert ledger.get_send(send_id).completed_at is not None
    ledger.note_tracking(send_id, opens=True, clicks=False)
    ledger.note_tracking(send_id, opens=False, clicks=False)
    assert (ledger.get_send(send_id).open_tracking, ledger.get_send(send_id).click_tracking) == (
        1,
        0,
    )
    assert [w.recipients for w in ledger.ward_counts(send_id)] == [10, 10, 10]
    assert sorted(f.state for f in ledger.failure_rows(send_id)) == [State.FAILED] * 2


def test_stale_unknown_resend_left_and_suppressed(ledger):
    send_id = new_send(ledger)
    ledger.add_recipients(send_id, people(6))
    ledger.claim(send_id, 2)
    assert ledger.stale_to_unknown(send_id) == ["person0@example.org", "person1@example.org"]
    assert ledger.unknown_to_pending(send_id, {"person0@example.org"}) == 1
    assert ledger.suppress("Person2@example.org", "asked by phone")
    assert not ledger.suppress("person2@example.org", "again")
    assert ledger.drop_suppressed(send_id) == 1
    keep = {c.email for c in people(6)} - {"person5@example.org"}
    assert ledger.remove_left(send_id, keep) == 1
    states = ledger.recipient_states(send_id)
    assert states["person1@example.org"] == State.UNKNOWN and "person5@example.org" not in states
    dropped = next(r for r in ledger.delivery_rows(send_id) if r.state == State.DROPPED)
    assert dropped.cause == Cause.SUPPRESSED and dropped.suppressed
    assert [s.email for s in ledger.suppressions()] == ["Person2@example.org"]
    assert ledger.unsuppress("person2@example.org") and not ledger.is_suppressed("person2@x.org")


def event(kind: str, delivery_id: int, send_id: int, n: int, **extra) -> Event:
    return Event(
        kind=kind,
        sg_event_id=f"ev-{n}",
        email=extra.pop("email", ""),
        timestamp=1_780_000_000 + n,
        send_id=send_id,
        delivery_id=delivery_id,
        message_id="m1",
        reason=extra.pop("reason", None),
        bounce_type=extra.pop("bounce_type", ""),
        payload="{}",
        has_custom_args=True,
    )


def test_events_apply_with_precedence_engagement_and_suppression(ledger):
    send_id = new_send(ledger)
    ledger.add_recipients(send_id, people(3))
    claimed = ledger.claim(send_id, 3)
    ledger.record([(c.id, State.ACCEPTED, "m1", None) for c in claimed])
    a, b, c = (x.id for x in claimed)
    batch = [
        event("delivered", a, send_id, 1),
        event("processed", a, send_id, 2),  # lower rung: ignored
        event("open", a, send_id, 3),
        event("open", a, send_id, 4),
        event("bounce", b, send_id, 5, reason="550 5.1.1 gone"),
        event("click", a, send_id, 6),
    ]
    tally = apply_events(ledger, batch)
    assert (tally.applied, tally.changed, tally.suppressed) == (6, 2, 1)
    assert apply_events(ledger, batch).duplicates == 6
    rows = {r.id: r for r in ledger.delivery_rows(send_id)}
    assert rows[a].state == State.DELIVERED and rows[a].opened == 1 and rows[a].clicked == 1
    assert rows[a].first_opened_at < rows[a].last_opened_at
    assert rows[b].state == State.BOUNCED and ledger.is_suppressed("person1@example.org")
    assert unsubscribe_by_link(ledger, c) and not unsubscribe_by_link(ledger, c)
    assert ledger.counts(send_id)[State.UNSUBSCRIBED] == 1
    assert {e.event for e in ledger.first_event_times(send_id)} >= {"delivered", "open"}


def test_forget_and_purge(ledger):
    send_id = new_send(ledger)
    ledger.add_recipients(send_id, people(3))
    claimed = ledger.claim(send_id, 3)
    ledger.record([(x.id, State.ACCEPTED, "m1", None) for x in claimed])
    apply_events(
        ledger, [event("delivered", claimed[0].id, send_id, 1, email="person0@example.org")]
    )
    forgotten = ledger.forget("PERSON0@example.org")
    assert (forgotten.deliveries, forgotten.sends, forgotten.events) == (1, 1, 1)
    assert forgotten.newly_suppressed and ledger.is_suppressed("person0@example.org")
    assert ledger.forget("person0@example.org").deliveries == 0
    row = next(r for r in ledger.delivery_rows(send_id) if r.id == claimed[0].id)
    assert row.email == "" and row.email_key.startswith("forgotten:")
    later = datetime.now(UTC) + timedelta(days=1)
    assert ledger.purge(later, dry_run=True).deliveries == 3
    purged = ledger.purge(later)
    assert (purged.sends, purged.deliveries) == ([send_id], 3)
    assert ledger.counts(send_id).total == 3 and ledger.is_purged(send_id)


def test_notices_are_kept_in_the_ledger(ledger):
    ledger.remember_notices({"a": "2026-11-29T10:00:00+00:00"})
    ledger.remember_notices({"a": "2026-11-29T10:00:00+00:00", "b": "2026-11-29T11:00:00+00:00"})
    assert set(ledger.notices()) == {"a", "b"}


def test_a_postgresql_database_not_upgraded_is_refused_with_the_command_to_run(postgres_database):
    with pytest.raises(DatabaseError, match="bulletin db upgrade"):
        open_ledger(postgres_database)


# --- the features first built on the sqlite3 Tracker (issues 17, 18, 21) ---------------------


def test_feedback_answers_replace_count_by_ward_and_survive_forget_and_purge(ledger):
    from bulletin.ledger.feedback import FeedbackStore

    send_id = new_send(ledger)
    ledger.add_recipients(send_id, people(3))
    rows = list(ledger.delivery_rows(send_id))
    store = FeedbackStore(ledger)
    store.record(send_id, rows[0].id, "not_useful", "", now="2026-11-01T10:00:00+00:00")
    store.record(send_id, rows[0].id, "useful", "Clear", now="2026-11-02T10:00:00+00:00")
    store.record(send_id, rows[1].id, "concern", "Too long", now="2026-11-03T10:00:00+00:00")
    assert store.counts(send_id) == {"useful": 1, "not_useful": 0, "concern": 1}
    assert store.answer_of(rows[0].id).comment == "Clear"
    assert {w.ward: w.total for w in store.ward_counts(send_id)} == {"Ward 0": 1, "Ward 1": 1}
    assert [a.comment for a in store.comments(send_id)] == ["Too long", "Clear"]
    assert store.answers(send_id)[0].email == "person0@example.org"
    with ledger.transaction():  # as privacy.forget does: one transaction with the erasure
        counts = ledger.forget("person1@example.org")
        assert store.forget_deliveries(counts.delivery_ids) == 1
    assert store.counts(send_id)["concern"] == 0
    later = datetime.now(UTC) + timedelta(days=1)
    stamp = later.isoformat(timespec="seconds")
    assert store.purge_comments(stamp, [send_id], dry_run=True) == 1
    with ledger.transaction():
        ledger.purge(later)
        assert store.purge_comments(stamp, [send_id]) == 1
    assert store.counts(send_id)["useful"] == 1  # the answer stays counted, its delivery gone
    assert [(a.delivery_id, a.comment) for a in store.answers(send_id)] == [(None, "")]


def test_approvals_record_once_per_link_and_per_send(ledger):
    from bulletin.ledger.approvals import AlreadyDecided, ApprovalStore, Kind, Route

    store = ApprovalStore(ledger)
    common = {
        "message": "street",
        "path": "messages/street.md",
        "approver": "Chief@Example.org",
        "route": Route.LINK,
        "audience": 3,
        "audience_definition": "contacts/*.csv",
        "text": "Hello",
    }
    request = store.add(fingerprint="f1", kind=Kind.REQUEST, **common)
    approved = store.add(fingerprint="f1", kind=Kind.APPROVED, request_id=request.id, **common)
    assert approved.approver == "chief@example.org" and approved.kind is Kind.APPROVED
    with pytest.raises(AlreadyDecided):
        store.add(fingerprint="f1", kind=Kind.CHANGES, request_id=request.id, **common)
    assert store.decision_for(request.id) == approved
    assert store.decisions("street", "f1") == [approved]
    assert store.last_approved_other("street", "f2") == approved
    assert store.last_approved_other("street", "f1") is None
    assert [e.kind for e in store.history("street")] == [Kind.REQUEST, Kind.APPROVED]
    send_id = new_send(ledger)
    store.record_send(send_id, "f1", 3, [approved.id])
    store.record_send(send_id, "f1", 3, [approved.id])  # a resume records nothing new
    versions = store.send_versions(send_id)
    assert [(v.fingerprint, v.after_event) for v in versions] == [("f1", approved.id)]
    assert store.send_approvals(send_id) == [approved]


def test_publications_keep_sources_publish_withdraw_and_remove(ledger):
    from bulletin.ledger.publications import PublicationStore

    store = PublicationStore(ledger)
    send_id = new_send(ledger)
    store.keep_source("abc", "street", b"---\nsubject: x\n---\n\xe2\x80\x94")
    store.keep_source("abc", "street", b"ignored: the same hash is the same bytes")
    assert store.source("abc") == b"---\nsubject: x\n---\n\xe2\x80\x94"
    assert store.source("nope") is None
    store.publish("BR-1", "street", send_id, "abc")
    page = store.publication("BR-1")
    assert (page.send_id, page.withdrawn) == (send_id, False) and page.sent_at
    assert store.withdraw("BR-1").withdrawn
    store.publish("BR-1", "street", send_id, "abc")
    assert not store.publication("BR-1").withdrawn
    store.remove("BR-1")
    assert store.publication("BR-1") is None and store.withdraw("BR-1") is None


def test_a_reused_test_database_starts_empty_and_numbers_sends_from_one(
    ledger_databases, postgres_cluster
):
    """tests/postgres.py hands one database to test after test: nothing may leak between them."""
    import psycopg

    name = ledger_databases.take()
    url = postgres_cluster.url(name)
    with open_ledger(url) as ledger:
        ledger.add_recipients(new_send(ledger), people(3))
        ledger.suppress("person1@example.org", "asked by phone")
    # A process the test left behind, in a transaction, holding a session lock.
    holder = psycopg.connect(url)
    holder.execute("SELECT pg_advisory_lock(7)")
    holder.execute("SELECT * FROM deliveries FOR UPDATE")
    ledger_databases.give_back(name)
    assert ledger_databases.take() == name
    try:
        with psycopg.connect(url) as other:
            assert other.execute("SELECT pg_try_advisory_lock(7)").fetchone() == (True,)
        with open_ledger(url) as ledger:
            assert ledger.sends() == [] and ledger.suppressions() == []
            assert new_send(ledger) == 1
    finally:
        holder.close()
        ledger_databases.give_back(name)


def test_claims_come_in_id_order_and_records_touch_only_sending_rows(ledger):
    """A claim is one statement (two on SQLite) and a record one per (state, message id,
    error), the ids one parameter: they hand back rows in order and write only `sending` rows."""
    send_id = new_send(ledger)
    ledger.add_recipients(send_id, people(12))
    first = ledger.claim(send_id, 5)
    assert [c.id for c in first] == sorted(c.id for c in first)
    assert [c.email for c in first] == [f"person{n}@example.org" for n in range(5)]
    assert [c.email_key for c in first] == [c.email.lower() for c in first]
    ledger.record([(c.id, State.ACCEPTED, "m1", None) for c in first])
    # Recorded again (a retried transaction) or with another outcome: rows no longer `sending`
    # are left as they are.
    ledger.record([(c.id, State.FAILED, None, "late") for c in first])
    second = ledger.claim(send_id, 100, first[-1].id)
    assert len(second) == 7 and second[0].id > first[-1].id
    ledger.record([(c.id, State.UNKNOWN, None, "timed out") for c in second[:2]])
    rows = {r.id: r for r in ledger.delivery_rows(send_id)}
    assert {(rows[c.id].state, rows[c.id].message_id, rows[c.id].error) for c in first} == {
        (State.ACCEPTED, "m1", None)
    }
    assert {(rows[c.id].state, rows[c.id].message_id) for c in second[:2]} == {
        (State.UNKNOWN, None)
    }
    assert {rows[c.id].state for c in second[2:]} == {State.SENDING}
    assert ledger.claim(send_id, 100, second[-1].id) == []


def test_a_large_queue_on_postgresql_is_analysed_for_the_claims(postgres_database, monkeypatch):
    """Statistics from before a big queue would make each claim read every pending row."""
    from sqlalchemy import text

    from bulletin.ledger import store

    engine = make_engine(postgres_database)
    upgrade(engine)
    monkeypatch.setattr(store, "ANALYZE_AFTER", 20)
    with open_ledger(postgres_database) as ledger:
        send_id = new_send(ledger)
        ledger.add_recipients(send_id, people(10))  # fewer: not analysed
        with engine.connect() as c:
            query = text("SELECT reltuples FROM pg_class WHERE relname = 'deliveries'")
            before = c.execute(query).scalar()
        ledger.add_recipients(send_id, people(40))
        with engine.connect() as c:
            after = c.execute(query).scalar()
        assert before < 0 and after == 40  # -1: never analysed
        assert len(ledger.claim(send_id, 100)) == 40
    engine.dispose()
