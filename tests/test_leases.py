"""Per-send locks and leases (issue 13): two messages send at once; a dead holder's rows only."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from bulletin.ledger.engine import make_engine
from bulletin.ledger.migrate import upgrade
from bulletin.ledger.states import State
from bulletin.ledger.store import open_ledger
from bulletin.send import Busy, Lease, send_lock


@dataclass
class Person:
    email: str
    first_name: str = "A"
    last_name: str = "B"

    def get(self, _key: str) -> str:
        return "Ward"


def _send(ledger, message: str = "m", recipients: int = 10) -> int:
    send_id = ledger.create_send(
        message=message,
        path=f"messages/{message}.md",
        subject="S",
        reference="",
        category="",
        content_hash="h",
        transport="sendgrid",
    )
    ledger.add_recipients(send_id, (Person(f"p{n}@example.org") for n in range(recipients)))
    return send_id


@pytest.fixture
def ledger(ledger_db):
    engine = make_engine(ledger_db)
    upgrade(engine)
    engine.dispose()
    with open_ledger(ledger_db) as opened:
        yield opened


# --- SQLite: one OS lock per message ---------------------------------------------------------


def test_two_messages_hold_their_send_locks_at_once(db_path):
    with send_lock(db_path, "monday") as first, send_lock(db_path, "tuesday") as second:
        assert first.held and second.held and first.exclusive and second.exclusive
        assert first.lease.holder != second.lease.holder
        busy = r"another bulletin send is running \(pid \d+, sending monday\)"
        with pytest.raises(Busy, match=busy), send_lock(db_path, "monday"):
            pass
    with send_lock(db_path, "monday"):  # released on exit
        pass


def test_a_symlinked_alias_takes_the_same_message_lock(db_path, workdir):
    db_path.touch()
    alias = workdir / "alias.db"
    alias.symlink_to(db_path)
    with send_lock(db_path, "monday"), pytest.raises(Busy), send_lock(alias, "monday"):
        pass


def test_the_whole_database_lock_excludes_every_sender_both_ways(db_path):
    with (
        send_lock(db_path, "monday"),
        pytest.raises(Busy, match="another bulletin send"),
        send_lock(db_path),  # forget / purge
    ):
        pass
    with send_lock(db_path), pytest.raises(Busy, match=r"\(pid \d+\)"), send_lock(db_path, "m"):
        pass


def test_on_postgresql_senders_of_one_message_share_it(postgres_database):
    with send_lock(postgres_database, "m") as one, send_lock(postgres_database, "m") as two:
        assert not one.exclusive and not two.exclusive
        assert one.lease.holder != two.lease.holder


# --- the ledger's leases (both back ends) -----------------------------------------------------


def test_claims_carry_the_holder_and_renew_its_lease(ledger):
    send_id = _send(ledger)
    me = Lease.new(60)
    assert ledger.take_lease(send_id, me)
    claimed = ledger.claim(send_id, 4, lease=me)
    rows = {r.id: r for r in ledger.delivery_rows(send_id)}
    assert {rows[c.id].lease for c in claimed} == {me.holder}
    ((holder, host, pid, _expires, live),) = ledger.holders(send_id)
    assert (holder, host, pid, live) == (me.holder, me.host, me.pid, True)


def test_batches_renew_the_lease_once_a_quarter_of_its_time_has_gone(ledger):
    """A claim or a record renews the lease only when it was last renewed a quarter of its
    time ago or more: a statement saved per batch, and never less than three quarters left."""
    send_id = _send(ledger)
    me = Lease.new(0.8)
    ledger.take_lease(send_id, me)
    (taken,) = (h.expires_at for h in ledger.holders(send_id))
    first = ledger.claim(send_id, 2, lease=me)
    assert [h.expires_at for h in ledger.holders(send_id)] == [taken]  # renewed just now
    time.sleep(0.25)
    second = ledger.claim(send_id, 2, after=first[-1].id, lease=me)
    (renewed,) = (h.expires_at for h in ledger.holders(send_id))
    assert renewed > taken
    time.sleep(0.25)
    ledger.record([(r.id, State.ACCEPTED, "x", None) for r in second], send_id=send_id, lease=me)
    assert [h.expires_at for h in ledger.holders(send_id)] > [renewed]
    time.sleep(0.25)
    ledger.record([], send_id=send_id, lease=me)  # waiting for answers: still renews
    assert ledger.holders(send_id)[0].live
    states = {r.id: r.state for r in ledger.delivery_rows(send_id)}
    assert [states[r.id] for r in first + second] == [State.SENDING] * 2 + [State.ACCEPTED] * 2


def test_only_an_expired_holders_rows_become_unknown(ledger):
    send_id = _send(ledger)
    live, dead, me = Lease.new(60), Lease.new(1), Lease.new(60)
    for lease in (live, dead, me):
        ledger.take_lease(send_id, lease)
    live_rows = ledger.claim(send_id, 3, lease=live)
    dead_rows = ledger.claim(send_id, 2, lease=dead)
    time.sleep(1.1)  # the dead holder renews nothing: its lease runs out
    stale = ledger.resolve_stale(send_id, me.holder)
    assert sorted(stale) == sorted(r.email for r in dead_rows)
    states = {r.id: r.state for r in ledger.delivery_rows(send_id)}
    assert {states[r.id] for r in dead_rows} == {State.UNKNOWN}
    assert {states[r.id] for r in live_rows} == {State.SENDING}  # a live holder's: untouched
    assert {h for h, *_ in ledger.holders(send_id)} == {live.holder, me.holder}
    assert ledger.other_holders(send_id, me.holder) == 1
    assert ledger.others_in_flight(send_id, me.holder) == 3
    # The live holder records its answers; leaving, it takes its lease row with it.
    ledger.record([(r.id, State.ACCEPTED, "x", None) for r in live_rows])
    assert ledger.release_lease(send_id, live.holder) == []
    assert ledger.others_in_flight(send_id, me.holder) == 0
    assert {h for h, *_ in ledger.holders(send_id)} == {me.holder}


def test_a_sole_holder_settles_every_sending_row(ledger):
    send_id = _send(ledger)
    other, me = Lease.new(60), Lease.new(60)
    ledger.take_lease(send_id, other)
    rows = ledger.claim(send_id, 3, lease=other)
    # SQLite's OS lock proved nobody else is sending: every `sending` row is a dead run's.
    assert sorted(ledger.resolve_stale(send_id, me.holder, everyone=True)) == sorted(
        r.email for r in rows
    )
    assert ledger.holders(send_id) == []


def test_leaving_turns_the_holders_unanswered_rows_unknown(ledger):
    send_id = _send(ledger)
    me = Lease.new(60)
    ledger.take_lease(send_id, me)
    rows = ledger.claim(send_id, 2, lease=me)
    assert sorted(ledger.release_lease(send_id, me.holder)) == sorted(r.email for r in rows)
    assert ledger.counts(send_id)[State.UNKNOWN] == 2
    assert ledger.holders(send_id) == []


# --- a lost PostgreSQL connection mid-batch (issue 13) ------------------------------------------


def _kill_own_connection_on(ledger, killer, starts: str) -> list[int]:
    """Terminate the ledger's server connection right after its first statement beginning
    `starts` (from another connection, as an administrator or a failover would)."""
    from sqlalchemy import event, text

    fired: list[int] = []

    @event.listens_for(ledger.engine, "after_cursor_execute")
    def kill(conn, _cursor, statement, _params, _context, _many) -> None:
        if not fired and statement.lstrip().upper().startswith(starts):
            pid = conn.connection.dbapi_connection.info.backend_pid
            with killer.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                other.commit()
            fired.append(pid)

    return fired


def test_a_claim_cut_off_before_it_committed_is_run_again(postgres_database):
    upgrade_engine = make_engine(postgres_database)
    upgrade(upgrade_engine)
    killer = upgrade_engine
    with open_ledger(postgres_database) as ledger:
        send_id, me = _send(ledger, recipients=30), Lease.new(60)
        ledger.take_lease(send_id, me)
        fired = _kill_own_connection_on(ledger, killer, "UPDATE DELIVERIES SET STATE")
        claimed = ledger.claim(send_id, 10, lease=me)
        assert fired and len(claimed) == 10
        counts = ledger.counts(send_id)
        assert (counts[State.SENDING], counts[State.PENDING]) == (10, 20)
    killer.dispose()


def test_a_claim_that_committed_before_the_connection_went_is_not_lost(postgres_database):
    killer = make_engine(postgres_database)
    upgrade(killer)
    with open_ledger(postgres_database) as ledger:
        send_id, me = _send(ledger, recipients=30), Lease.new(60)
        ledger.take_lease(send_id, me)
        committed = ledger.claim(send_id, 10, lease=me)  # its answer lost: the caller never saw it
        # The next batch's claim (its lease was renewed just now, so it renews nothing).
        fired = _kill_own_connection_on(ledger, killer, "UPDATE DELIVERIES SET STATE")
        again = ledger.claim(send_id, 10, after=committed[-1].id, lease=me, in_flight=())
        assert fired
        # The retry finds its own `sending` rows that no request carries, and hands them back
        # instead of claiming more: nobody is left `sending` without a request.
        assert [c.id for c in again] == [c.id for c in committed]
        assert ledger.counts(send_id)[State.SENDING] == 10
    killer.dispose()


def test_a_kept_connection_lost_between_or_during_batches_is_replaced(postgres_database):
    """The sending thread keeps one connection for its batches (no ping per batch): when the
    server drops it, idle or mid-claim, the claim runs again on a new one, exactly once."""
    from sqlalchemy import text

    killer = make_engine(postgres_database)
    upgrade(killer)
    with open_ledger(postgres_database) as ledger, ledger.keeping_connection():
        send_id, me = _send(ledger, recipients=30), Lease.new(60)
        ledger.take_lease(send_id, me)
        first = ledger.claim(send_id, 10, lease=me)
        pid = ledger._local.kept.connection.dbapi_connection.info.backend_pid
        with killer.connect() as other:  # dropped while idle between two batches
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            other.commit()
        second = ledger.claim(
            send_id, 10, after=first[-1].id, lease=me, in_flight={r.id for r in first}
        )
        fired = _kill_own_connection_on(ledger, killer, "UPDATE DELIVERIES SET STATE")
        third = ledger.claim(
            send_id, 10, after=second[-1].id, lease=me, in_flight={r.id for r in first + second}
        )
        assert fired
        ids = [r.id for r in first + second + third]
        assert len(ids) == len(set(ids)) == 30
        assert ledger.counts(send_id)[State.SENDING] == 30
    killer.dispose()


def test_status_names_who_is_sending(workdir, cli, db_path):
    import json

    cli("send", "eu-referendum", "--yes", "--limit", "3")
    me = Lease.new(60)
    with open_ledger(db_path) as ledger:
        ledger.take_lease(1, me)
    shown = cli("status", "1").stdout
    assert f"Sending now: {me.host} (pid {me.pid}), lease until " in shown
    (send,) = json.loads(cli("status", "1", "--json").stdout)["sends"]
    assert [(s["host"], s["pid"], s["live"]) for s in send["senders"]] == [(me.host, me.pid, True)]
    cli("send", "eu-referendum", "--yes")  # holds the message's lock: a dead holder's row goes
    assert "Sending now" not in cli("status", "1").stdout


def test_resend_unknown_needs_the_send_to_itself_on_postgresql(
    workdir, cli, postgres_database, monkeypatch
):
    monkeypatch.setenv("BULLETIN_DB", postgres_database)
    cli("db", "upgrade")
    cli("send", "eu-referendum", "--yes", "--limit", "3")
    other = Lease.new(60)  # another machine sending this send now
    with open_ledger(postgres_database) as ledger:
        ledger.take_lease(1, other)
        result = cli("send", "eu-referendum", "--yes", "--resend-unknown", expect=4)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: --resend-unknown needs send #1 to itself, and another ")
        assert "Traceback" not in result.stderr
        assert ledger.counts(1)[State.ACCEPTED] == 3  # nothing was sent
        ledger.release_lease(1, other.holder)
    cli("send", "eu-referendum", "--yes", "--resend-unknown")  # alone now: it goes


def test_a_sender_with_nothing_left_to_claim_names_the_sender_that_has_it(
    workdir, cli, postgres_database, monkeypatch
):
    """PostgreSQL: everything pending is in another live sender's hands, so this one says so
    (exit 4) instead of reporting "0 accepted" and completing a send still in flight."""
    monkeypatch.setenv("BULLETIN_DB", postgres_database)
    cli("db", "upgrade")
    cli("send", "eu-referendum", "--yes", "--limit", "3")
    other = Lease.new(60)  # another machine, mid-request with every recipient left
    with open_ledger(postgres_database) as ledger:
        ledger.take_lease(1, other)
        claimed = ledger.claim(1, 1000, 0, lease=other)
        assert claimed
        result = cli("send", "eu-referendum", "--yes", expect=4)
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: another bulletin send is running (")
        assert f"pid {other.pid}, sending send #1)" in last
        counts = ledger.counts(1)
        assert counts[State.SENDING] == len(claimed) and counts[State.ACCEPTED] == 3
        ledger.release_lease(1, other.holder)
