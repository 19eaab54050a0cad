"""Event batches as the webhook and `events import` apply them, on SQLite and PostgreSQL.

The ledger applies a batch with a handful of set-based statements (issue 14: arrays and
`unnest` on PostgreSQL, the driver's executemany on SQLite); these tests pin the rules
(dedupe, matching, the precedence ladder, engagement times, suppression, unknown deliveries)
on batches big enough to cross every chunk boundary, against a model written out here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from bulletin.config import Settings
from bulletin.contacts import Contact
from bulletin.events import NotAnArray, apply_events, array_items, iso, parse_event
from bulletin.ledger import schema
from bulletin.ledger.engine import is_postgres_url, make_engine
from bulletin.ledger.migrate import upgrade
from bulletin.ledger.states import RANK, State
from bulletin.ledger.store import open_ledger
from bulletin.web.webhook import Webhook

T0 = 1_719_820_800
SECRET = "event-batches-test-secret-0123456789"


@pytest.fixture
def ledger(ledger_db):
    if is_postgres_url(ledger_db):
        engine = make_engine(ledger_db)
        upgrade(engine)
        engine.dispose()
    with open_ledger(ledger_db, secret=SECRET) as opened:
        yield opened


def people(count: int) -> list[Contact]:
    return [
        Contact(f"Person{n}@Example.org", {"first_name": f"P{n}"}, "contacts/people.csv", n + 1)
        for n in range(count)
    ]


def accepted_send(ledger, count: int, per_request: int = 100) -> tuple[int, list]:
    """A send of `count`, all accepted, `per_request` recipients sharing one message id."""
    send_id = ledger.create_send(
        message="street",
        path="messages/street.md",
        subject="Street safety",
        reference="BR-1",
        category="street",
        content_hash="abc",
        transport="sendgrid",
    )
    ledger.add_recipients(send_id, people(count))
    claimed = []
    while batch := ledger.claim(send_id, per_request):
        xmid = f"xmid{batch[0].id}"
        ledger.record([(c.id, State.ACCEPTED, xmid, None) for c in batch])
        claimed += [(c, xmid) for c in batch]
    return send_id, claimed


def rows(ledger) -> dict[int, dict]:
    with ledger.reading() as c:
        return {r.id: dict(r._mapping) for r in c.execute(select(schema.deliveries))}


def stored(ledger) -> dict[str, int | None]:
    E = schema.events
    with ledger.reading() as c:
        return dict(c.execute(select(E.c.sg_event_id, E.c.delivery_id)).all())


def test_a_big_batch_follows_every_rule(ledger):
    send_id, claimed = accepted_send(ledger, 600)
    ladder = ["processed", "delivered", "open", "open", "click", "deferred", "processed"]
    events, expected_state, spans = [], {}, {}
    expected_suppressed = set()
    by_message_id = set()
    for n, (c, xmid) in enumerate(claimed):
        state = State.ACCEPTED
        for step, kind in enumerate(ladder):
            at = T0 + (n % 7) * 100 - step * 10  # out of order: later steps carry earlier times
            if kind == "delivered" and n % 50 == 3:
                kind = "bounce"
            body = {
                "email": c.email,
                "timestamp": at,
                "event": kind,
                "sg_event_id": f"e-{n}-{step}",
                "sg_message_id": f"{xmid}.filter-{n}.0",
            }
            if n % 10 == 1:  # no custom args: matched by message id and address
                by_message_id.add(c.id)
            else:
                body |= {"bulletin_send": str(send_id), "bulletin_delivery": str(c.id)}
            if kind == "bounce":
                body |= {"type": "bounce", "reason": "550 5.1.1 no such user"}
                expected_suppressed.add(c.email.lower())
            new = {"processed": State.ACCEPTED, "delivered": State.DELIVERED}.get(kind)
            new = {"bounce": State.BOUNCED, "deferred": State.DEFERRED}.get(kind, new)
            if new is not None and RANK[new] > RANK[state]:
                state = new
            if kind in ("open", "click"):
                lo, hi = spans.get((c.id, kind), (iso(at), iso(at)))
                spans[(c.id, kind)] = (min(lo, iso(at)), max(hi, iso(at)))
            events.append(body)
        if n == 200:
            events.append(events[-1])  # SendGrid retried: a duplicate within the batch
        expected_state[c.id] = state
    strangers = [
        {"email": f"stranger{n}@example.net", "event": "bounce", "sg_event_id": f"s-{n}"}
        for n in range(5)
    ]
    other_app = {  # the address of one of ours, but no custom args and no message id of ours
        "email": claimed[0][0].email,
        "event": "spamreport",
        "sg_event_id": "other-app",
        "sg_message_id": "someoneelse.filter.0",
    }
    parsed = [parse_event(o) for o in [*events, *strangers, other_app]]

    tally = apply_events(ledger, parsed)

    assert tally.received == len(parsed)
    assert tally.duplicates == 1
    assert tally.unknown == 6
    assert tally.applied == len(events) - 1
    assert tally.suppressed == len(expected_suppressed)
    found = rows(ledger)
    assert {i: found[i]["state"] for i in expected_state} == expected_state
    for c, _ in claimed:
        for kind, flag in (("open", "opened"), ("click", "clicked")):
            lo, hi = spans[(c.id, kind)]
            assert found[c.id][flag] == 1
            assert (found[c.id][f"first_{flag}_at"], found[c.id][f"last_{flag}_at"]) == (lo, hi)
    assert {r.email.lower() for r in ledger.suppressions()} == expected_suppressed
    kept = stored(ledger)
    assert len(kept) == len(parsed) - 1
    assert all(kept[f"s-{n}"] is None for n in range(5)) and kept["other-app"] is None
    assert {kept[f"e-{n}-0"] for n, (c, _) in enumerate(claimed) if c.id in by_message_id} == (
        by_message_id
    )

    again = apply_events(ledger, parsed)  # the same post again: nothing moves
    assert (again.duplicates, again.applied, again.changed, again.suppressed) == (
        len(parsed),
        0,
        0,
        0,
    )
    assert rows(ledger) == found


def test_engagement_times_only_widen(ledger):
    send_id, claimed = accepted_send(ledger, 3)
    (first, _), (second, _), _ = claimed

    def opens(*times: int, prefix: str) -> list:
        return [
            parse_event(
                {
                    "email": row.email,
                    "event": "open",
                    "timestamp": T0 + at,
                    "sg_event_id": f"{prefix}-{row.id}-{at}",
                    "bulletin_send": str(send_id),
                    "bulletin_delivery": str(row.id),
                }
            )
            for row in (first, second)
            for at in times
        ]

    apply_events(ledger, opens(100, prefix="a"))
    apply_events(ledger, opens(50, 200, 150, prefix="b"))
    apply_events(ledger, opens(120, prefix="c"))
    found = rows(ledger)
    for row in (first, second):
        assert (found[row.id]["first_opened_at"], found[row.id]["last_opened_at"]) == (
            iso(T0 + 50),
            iso(T0 + 200),
        )
        assert found[row.id]["opened"] == 1 and found[row.id]["clicked"] == 0
        assert found[row.id]["state"] == State.ACCEPTED


def test_an_address_without_custom_args_matches_only_one_message_id(ledger):
    _, claimed = accepted_send(ledger, 4, per_request=2)
    (a, xmid_a), (b, _), (c, xmid_c), _ = claimed
    events = [
        {"email": a.email.upper(), "event": "delivered", "sg_message_id": f"{xmid_a}.x.0"},
        {"email": "", "event": "delivered", "sg_message_id": f"{xmid_c}.y.0"},  # two share it
        {"email": b.email, "event": "bounce", "type": "blocked", "sg_message_id": f"{xmid_a}.z"},
    ]
    tally = apply_events(ledger, [parse_event(o) for o in events])
    assert (tally.applied, tally.unknown, tally.suppressed) == (2, 1, 0)  # blocked: no suppress
    found = rows(ledger)
    assert found[a.id]["state"] == State.DELIVERED
    assert found[b.id]["state"] == State.BLOCKED
    assert found[c.id]["state"] == State.ACCEPTED


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        " [ ] ",
        '[{"a": 1}]',
        '[{"a": 1} , {"b": [1, 2, {"c": null}]},\n {"d": "\\u00e9 \\" ]"}]\n',
        "[1,2,3]",
        '["x", 1.5e3, true, false, null, NaN]',
        '\t[\r\n{"a":"]"}\r\n]\t',
    ],
)
def test_array_items_reads_what_json_loads_reads(text):
    for body in (text.encode(), text.encode("utf-16"), b"\xef\xbb\xbf" + text.encode()):
        items = array_items(body)
        assert [v for v, _ in items] == json.loads(body)
        assert [json.loads(t) for _, t in items] == json.loads(body)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", ValueError),
        ("[", ValueError),
        ("[1,]", ValueError),
        ("[,1]", ValueError),
        ("[1 2]", ValueError),
        ("[1]]", ValueError),
        ("[1] x", ValueError),
        ('[{"a": }]', ValueError),
        ("{}", NotAnArray),
        ('"text"', NotAnArray),
        ("17", NotAnArray),
    ],
)
def test_array_items_refuses_what_json_loads_refuses(text, error):
    with pytest.raises(error):
        array_items(text.encode())
    if error is not NotAnArray:
        with pytest.raises(ValueError):
            json.loads(text)


def test_a_post_stores_each_event_as_sent_and_skips_the_malformed(ledger, ledger_db, tmp_path):
    send_id, claimed = accepted_send(ledger, 2)
    (a, _), (b, _) = claimed

    def of(row, kind: str) -> str:
        return json.dumps(
            {
                "email": row.email,
                "event": kind,
                "timestamp": T0,
                "sg_event_id": f"{kind}-{row.id}",
                "bulletin_send": str(send_id),
                "bulletin_delivery": str(row.id),
                "useragent": "Mozilla/5.0 (café)",
            },
            indent=1,
        )

    broken = '{"event": "open", "email": "x\\udc80@example.org", "sg_event_id": "lone"}'
    body = f"[\n{of(a, 'delivered')} ,\n{broken},\n{of(b, 'open')}]".encode()
    settings = Settings(workdir=Path(tmp_path), db=str(ledger_db), secret=SECRET)
    webhook = Webhook(settings, insecure=True)
    try:
        status, tally, _ = webhook.apply(body)
    finally:
        webhook.close()
    assert status == 200
    assert (tally["applied"], tally["malformed"]) == (2, 1)
    E = schema.events
    with ledger.reading() as c:
        payloads = dict(c.execute(select(E.c.sg_event_id, E.c.payload)).all())
    assert payloads == {f"delivered-{a.id}": of(a, "delivered"), f"open-{b.id}": of(b, "open")}
    assert rows(ledger)[a.id]["state"] == State.DELIVERED
    assert rows(ledger)[b.id]["opened"] == 1


# --- queueing (PostgreSQL: COPY into a temporary table, then one INSERT … SELECT) ------------


def test_queueing_keeps_the_list_order_and_the_first_of_two_rows_for_an_address(ledger):
    send_id, _ = accepted_send(ledger, 0)
    audience = people(2500)
    twin = Contact("PERSON7@example.org", {"first_name": "Twin"}, "contacts/people.csv", 9999)
    audience.insert(1200, twin)  # a second row for person 7, later in the list
    assert ledger.add_recipients(send_id, iter(audience)) == 2500  # a generator: streamed
    queued = sorted(rows(ledger).values(), key=lambda r: r["id"])
    assert [r["email"] for r in queued] == [p.email for p in people(2500)]
    assert queued[7]["first_name"] == "P7" and queued[7]["email_key"] == "person7@example.org"
    assert {r["state"] for r in queued} == {State.PENDING}
    assert ledger.add_recipients(send_id, people(2600)) == 100  # only the new ones
    with ledger.transaction():  # twice in one transaction: the staging table is gone between
        assert ledger.add_recipients(send_id, people(2700)) == 100
        assert ledger.add_recipients(send_id, people(2701)) == 1
    assert ledger.counts(send_id)["pending"] == 2701


def test_engagement_after_a_bounce_keeps_its_state_and_error(ledger):
    send_id, claimed = accepted_send(ledger, 1)
    ((row, _),) = claimed
    custom = {"bulletin_send": str(send_id), "bulletin_delivery": str(row.id)}
    bounce = {"event": "bounce", "type": "bounce", "reason": "550 5.1.1 no such user"}
    apply_events(ledger, [parse_event({**bounce, **custom, "email": row.email, "timestamp": T0})])
    before = rows(ledger)[row.id]
    click = {"event": "click", "email": row.email, "timestamp": T0 + 60, **custom}
    apply_events(ledger, [parse_event(click)])
    after = rows(ledger)[row.id]
    assert (after["state"], after["error"], after["updated_at"]) == (
        State.BOUNCED,
        "550 5.1.1 no such user",
        before["updated_at"],
    )
    assert (after["clicked"], after["first_clicked_at"], after["opened"]) == (1, iso(T0 + 60), 0)


# --- `events import`: the file is read in a thread ahead of the batches being applied --------


def test_an_import_in_small_batches_ends_as_one_big_batch(ledger, ledger_db, tmp_path):
    import threading

    from bulletin.events import import_events

    send_id, claimed = accepted_send(ledger, 40)
    lines = []
    for n, (c, _) in enumerate(claimed):
        for kind in ("processed", "delivered", "open"):
            event = {
                "email": c.email,
                "event": kind,
                "timestamp": T0 + n,
                "sg_event_id": f"{kind}-{c.id}",
                "bulletin_send": str(send_id),
                "bulletin_delivery": str(c.id),
            }
            lines.append(json.dumps(event))
        if n % 9 == 0:
            lines.append("{not json")
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    threads = threading.active_count()

    tally = import_events(ledger, path, batch_size=7)

    assert (tally.received, tally.applied, tally.malformed) == (120, 120, 5)
    assert {r["state"] for r in rows(ledger).values()} == {State.DELIVERED}
    assert threading.active_count() == threads  # the reader has finished
    again = import_events(ledger, path, batch_size=1000)
    assert (again.duplicates, again.applied) == (120, 0)


def test_an_import_that_fails_stops_its_reader(ledger, tmp_path):
    import threading

    from bulletin.errors import DatabaseError
    from bulletin.events import import_events

    path = tmp_path / "events.ndjson"
    path.write_text(
        "\n".join(json.dumps({"event": "open", "sg_event_id": f"e{n}"}) for n in range(500)),
        encoding="utf-8",
    )
    threads = threading.active_count()
    with ledger.transaction() as c:  # a real failure: the table is not there any more
        c.exec_driver_sql("ALTER TABLE events RENAME TO events_elsewhere")
    with pytest.raises(DatabaseError):
        import_events(ledger, path, batch_size=10)
    assert threading.active_count() == threads


def test_two_processes_applying_one_post_count_each_event_once(ledger, ledger_db):
    import threading

    send_id, claimed = accepted_send(ledger, 300)
    events = [
        parse_event(
            {
                "email": c.email,
                "event": kind,
                "timestamp": T0,
                "sg_event_id": f"{kind}-{c.id}",
                "bulletin_send": str(send_id),
                "bulletin_delivery": str(c.id),
            }
        )
        for c, _ in claimed
        for kind in ("delivered", "open")
    ]
    tallies, start = [], threading.Barrier(2)

    def worker() -> None:
        with open_ledger(ledger_db, secret=SECRET) as own:  # its own connections
            start.wait()
            tallies.append(apply_events(own, events))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(t.applied for t in tallies) == len(events)
    assert sum(t.duplicates for t in tallies) == len(events)
    assert sum(t.changed for t in tallies) == 300
    assert {r["state"] for r in rows(ledger).values()} == {State.DELIVERED}
