"""Delivery events: mapping to deliveries, precedence, duplicates, suppression, `events import`.

Deliveries come from real sends (to the outbox, or through the SendGrid stand-in when the
X-Message-Id matters); events are applied to the real tracking database, SQLite and PostgreSQL
(the `backend` fixture).
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest
from backends import Backend
from sqlalchemy.engine import RowMapping

from bulletin.errors import Problem
from bulletin.events import apply_events, iter_json, moves_up, parse_event
from bulletin.tracking import Tracker

T0 = 1_719_820_800  # 2024-07-01 08:00 UTC


@pytest.fixture
def sent(backend, workdir, cli, monkeypatch):
    """The example letter sent to the 34 sample contacts through the outbox."""
    monkeypatch.setenv("BULLETIN_SECRET", "events-test-secret-0123456789abcdef")
    cli("send", "eu-referendum", "--yes")
    return workdir


def send_again(workdir: Path, cli):
    """A second send: the letter with a postscript (an unchanged message would resume)."""
    message = workdir / "messages" / "eu-referendum.md"
    message.write_text(message.read_text() + "\nP.S. Thank you for passing this on.\n")
    return cli("send", "eu-referendum", "--yes", "--new-send")


def deliveries(db: Backend) -> list[RowMapping]:
    return db.rows("SELECT * FROM deliveries ORDER BY id")


def delivery(db: Backend, delivery_id: int) -> RowMapping:
    return next(d for d in deliveries(db) if d["id"] == delivery_id)


def event(row, kind: str, at: int = 0, *, event_id: str | None = None, **extra) -> dict:
    """A SendGrid event for a delivery row, carrying the custom args a send attaches."""
    body = {
        "email": row["email"],
        "timestamp": T0 + at,
        "event": kind,
        "sg_event_id": event_id or f"{kind}-{row['id']}-{at}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filterdrecv-p3mdw1-756b745b58-kmzbl-18.0",
        "bulletin_send": str(row["send_id"]),
        "bulletin_delivery": str(row["id"]),
    }
    body.update(extra)
    return body


def apply(db: Backend, *objects: dict):
    with Tracker(db.db) as tracker:
        return apply_events(tracker, [parse_event(o) for o in objects])


def suppressions(db: Backend) -> dict[str, tuple[str, str]]:
    return {e: (r, s) for e, r, s in db.tuples("SELECT email, reason, source FROM suppressions")}


def stored_events(db: Backend) -> list[tuple]:
    return db.tuples("SELECT sg_event_id, delivery_id, event FROM events ORDER BY id")


# --- precedence ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "moves"),
    [
        ("accepted", "deferred", True),
        ("deferred", "delivered", True),
        ("delivered", "deferred", False),
        ("delivered", "accepted", False),
        ("bounced", "delivered", False),
        ("bounced", "accepted", False),
        ("delivered", "bounced", True),  # an asynchronous bounce after delivery wins
        ("delivered", "unsubscribed", True),
        ("delivered", "spamreport", True),
        ("spamreport", "bounced", False),
        ("bounced", "dropped", False),  # equal rank: the first outcome stays
        ("unknown", "accepted", True),  # SendGrid's word settles an unknown outcome
        ("pending", "delivered", False),  # never sent: events do not change it
    ],
)
def test_state_precedence(current, new, moves):
    assert moves_up(current, new) is moves


def test_events_map_by_custom_args_and_never_move_back(sent, backend):
    first, second = deliveries(backend)[:2]
    tally = apply(
        backend,
        event(first, "processed", 1),
        event(first, "delivered", 30),
        event(second, "processed", 1),
        event(second, "bounce", 40, type="bounce", reason="550 5.1.1 unknown user"),
    )
    assert (tally.applied, tally.unknown, tally.changed) == (4, 0, 2)
    # Late and out of order: none of these may undo a final outcome.
    apply(
        backend,
        event(first, "processed", 2, event_id="late-processed"),
        event(first, "deferred", 3, response="451 try later"),
        event(second, "delivered", 50),
        event(second, "processed", 2, event_id="late-processed-2"),
    )
    assert delivery(backend, first["id"])["state"] == "delivered"
    assert delivery(backend, second["id"])["state"] == "bounced"
    assert delivery(backend, second["id"])["error"] == "550 5.1.1 unknown user"
    # A bounce after delivered is an asynchronous bounce: recorded.
    apply(backend, event(first, "bounce", 600, type="bounce", reason="550 5.2.1 mailbox disabled"))
    assert delivery(backend, first["id"])["state"] == "bounced"


def test_reversed_batch_ends_in_the_same_state_as_ordered(sent, backend):
    rows = deliveries(backend)[:3]
    story = [
        ("processed", {}),
        ("deferred", {"response": "421 busy"}),
        ("delivered", {}),
        ("open", {}),
        ("click", {"url": "https://www.example.org/report"}),
    ]
    apply(backend, *[event(rows[0], kind, n, **extra) for n, (kind, extra) in enumerate(story)])
    apply(
        backend, *[event(rows[1], kind, n, **extra) for n, (kind, extra) in enumerate(story)][::-1]
    )
    for kind, extra in reversed(story):  # one post per event, newest first
        apply(backend, event(rows[2], kind, story.index((kind, extra)), **extra))
    got = [delivery(backend, r["id"]) for r in rows]
    for row in got:
        assert (row["state"], row["opened"], row["clicked"], row["error"]) == (
            "delivered",
            1,
            1,
            None,
        )
    assert len({(r["first_opened_at"], r["first_clicked_at"]) for r in got}) == 1


def test_open_and_click_set_flags_and_first_last_times_only(sent, backend):
    row = deliveries(backend)[0]
    apply(backend, event(row, "delivered", 10))
    apply(backend, event(row, "open", 3600), event(row, "open", 600))
    apply(backend, event(row, "open", 1800), event(row, "click", 7200, url="https://example.org"))
    got = delivery(backend, row["id"])
    assert got["state"] == "delivered"
    assert (got["opened"], got["clicked"]) == (1, 1)
    assert got["first_opened_at"] == "2024-07-01T08:10:00+00:00"
    assert got["last_opened_at"] == "2024-07-01T09:00:00+00:00"
    assert got["first_clicked_at"] == got["last_clicked_at"] == "2024-07-01T10:00:00+00:00"


def test_events_never_change_a_pending_delivery(sent, cli, backend):
    backend.execute("UPDATE deliveries SET state = 'pending' WHERE id = 1")
    tally = apply(backend, event(delivery(backend, 1), "delivered", 5))
    assert tally.applied == 1 and tally.changed == 0
    assert delivery(backend, 1)["state"] == "pending"


def test_processed_settles_an_unknown_outcome(sent, backend):
    backend.execute("UPDATE deliveries SET state = 'unknown' WHERE id = 2")
    apply(backend, event(delivery(backend, 2), "processed", 5))
    assert delivery(backend, 2)["state"] == "accepted"


# --- duplicates and unknown deliveries -----------------------------------------------------------


def test_duplicates_are_ignored_within_and_across_batches(sent, backend):
    row = deliveries(backend)[0]
    batch = [event(row, "delivered", 5), event(row, "open", 60)]
    first = apply(backend, *batch, batch[0])
    assert (first.received, first.applied, first.duplicates) == (3, 2, 1)
    again = apply(backend, *batch)
    assert (again.applied, again.duplicates, again.changed) == (0, 2, 0)
    assert len(stored_events(backend)) == 2


def test_an_event_without_an_id_is_deduplicated_by_its_content(sent, backend):
    row = deliveries(backend)[0]
    body = event(row, "dropped", 5, reason="Bounced Address")
    del body["sg_event_id"]
    assert apply(backend, body).applied == 1
    assert apply(backend, dict(reversed(body.items()))).duplicates == 1
    assert stored_events(backend)[0][0].startswith("sha256:")


def test_events_for_unknown_deliveries_are_kept_and_counted(sent, backend):
    row = deliveries(backend)[0]
    stranger = {
        "email": "stranger@example.net",
        "event": "delivered",
        "timestamp": T0,
        "sg_event_id": "stranger-1",
    }
    elsewhere = event(row, "delivered", 5, event_id="elsewhere-1", bulletin_delivery="99999")
    wrong_send = event(row, "delivered", 5, event_id="wrong-send-1", bulletin_send="77")
    test_copy = {
        "email": row["email"],
        "event": "delivered",
        "timestamp": T0,
        "sg_event_id": "test-copy-1",
        "bulletin_test": "1",
    }
    tally = apply(backend, stranger, elsewhere, wrong_send, test_copy)
    assert (tally.received, tally.applied, tally.unknown) == (4, 0, 4)
    assert [d for _, d, _ in stored_events(backend)] == [None, None, None, None]
    assert delivery(backend, row["id"])["state"] == "accepted"  # custom args are not guessed at


def test_an_event_with_only_an_address_changes_nothing(sent, cli, backend):
    """Issue 12: without custom_args or a message id of ours it is another app's event."""
    send_again(sent, cli)
    rows = deliveries(backend)
    first = rows[0]
    body = {
        "email": first["email"].upper(),
        "event": "bounce",
        "type": "bounce",
        "reason": "550 5.1.1 no such user",
        "timestamp": T0,
        "sg_event_id": "late-bounce-1",
    }
    tally = apply(backend, body)
    assert (tally.applied, tally.unknown, tally.suppressed) == (0, 1, 0)
    assert {delivery(backend, r["id"])["state"] for r in rows if r["email"] == first["email"]} == {
        "accepted"
    }


def test_fallback_to_sg_message_id_picks_the_recipient_among_a_batch(
    workdir, cli, sendgrid_env, backend
):
    cli("send", "eu-referendum", "--yes")
    rows = deliveries(backend)
    message_ids = {r["message_id"] for r in rows}
    assert len(message_ids) == 1  # one request, one X-Message-Id for all 34
    target = rows[5]
    body = {
        "email": target["email"],
        "event": "delivered",
        "timestamp": T0,
        "sg_event_id": "by-message-id",
        "sg_message_id": f"{target['message_id']}.filterdrecv-5645d9c87f-abcde-1-5F5FC76C-9.0",
    }
    tally = apply(backend, body)
    assert tally.applied == 1
    states = {r["id"]: r["state"] for r in deliveries(backend)}
    assert states[target["id"]] == "delivered"
    assert list(states.values()).count("delivered") == 1


# --- suppression ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "extra", "state", "reason"),
    [
        (
            "bounce",
            {"type": "bounce", "reason": "550 5.1.1 no such user"},
            "bounced",
            "hard bounce: 550 5.1.1 no such user",
        ),
        ("bounce", {"type": "blocked", "reason": "554 5.7.1 blocked by policy"}, "blocked", None),
        (
            "dropped",
            {"reason": "Bounced Address"},
            "dropped",
            "dropped by SendGrid: Bounced Address",
        ),
        ("dropped", {"reason": "Invalid"}, "dropped", "dropped by SendGrid: Invalid"),
        (
            "dropped",
            {"reason": "Unsubscribed Address"},
            "dropped",
            "dropped by SendGrid: Unsubscribed Address",
        ),
        (
            "dropped",
            {"reason": "Spam Reporting Address"},
            "dropped",
            "dropped by SendGrid: Spam Reporting Address",
        ),
        ("dropped", {"reason": "Invalid SMTPAPI header"}, "dropped", None),
        ("dropped", {"reason": "Spam Content (if spam checker app enabled)"}, "dropped", None),
        ("spamreport", {}, "spamreport", "spam report"),
        ("unsubscribe", {}, "unsubscribed", "unsubscribed (SendGrid)"),
        (
            "group_unsubscribe",
            {"asm_group_id": 42},
            "unsubscribed",
            "unsubscribed from SendGrid group 42",
        ),
        ("deferred", {"response": "451 4.7.1 greylisted"}, "deferred", None),
    ],
)
def test_which_events_suppress_the_address(sent, kind, extra, state, reason, backend):
    row = deliveries(backend)[3]
    tally = apply(backend, event(row, kind, 30, **extra))
    assert delivery(backend, row["id"])["state"] == state
    listed = suppressions(backend)
    if reason is None:
        assert listed == {} and tally.suppressed == 0
    else:
        assert listed == {row["email"]: (reason, "sendgrid")} and tally.suppressed == 1


def test_a_suppressed_address_is_skipped_by_the_next_send(sent, cli, backend):
    row = deliveries(backend)[4]
    apply(backend, event(row, "spamreport", 90))
    result = send_again(sent, cli)
    assert "1 suppressed" in result.stderr
    outbox = [p.read_text(errors="replace") for p in (sent / "outbox").glob("2-*.eml")]
    assert len(outbox) == 33
    assert not any(row["email"] in text for text in outbox)


# --- reading files -------------------------------------------------------------------------------


def values(text: str, **sizes) -> list:
    return [
        str(item) if isinstance(item, Problem) else (item[0], item[1])
        for item in iter_json(io.StringIO(text), "events.json", **sizes)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"a": 1},\n {"b": 2}\n]\n', [(1, {"a": 1}), (2, {"b": 2})]),
        ('{"a": 1}\n\n{"b": 2}\r\n{"c": 3}', [(1, {"a": 1}), (3, {"b": 2}), (4, {"c": 3})]),
        ('[{"a": 1}]\n[{"b": 2}, {"c": 3}]\n', [(1, {"a": 1}), (2, {"b": 2}), (2, {"c": 3})]),
        ("\ufeff[]", []),
        ("", []),
        (
            '{"a": 1}\n{"b": \n{"c": 3}\n',
            [
                (1, {"a": 1}),
                "events.json:2: not valid JSON (Expecting ',' delimiter on line 4); "
                "skipped to the next event",
                (3, {"c": 3}),
            ],
        ),
        (
            '[\n  {\n    "a": 1,\n    "x": oops\n  },\n  {\n    "b": 2\n  }\n]\n',
            [
                "events.json:2: not valid JSON (Expecting value on line 4); "
                "skipped to the next event",
                (6, {"b": 2}),
            ],
        ),
    ],
)
def test_reading_arrays_and_json_lines(text, expected):
    assert values(text) == expected
    # The same with tiny reads, so every value straddles a chunk boundary.
    assert values(text, chunk=3) == expected


def test_import_an_array_then_json_lines_then_the_same_again(sent, cli, backend):
    rows = deliveries(backend)
    array = [event(r, "delivered", 30) for r in rows[:10]]
    (sent / "events.json").write_text(json.dumps(array, indent=2))
    lines = [event(r, "open", 600) for r in rows[:10]]
    lines.append({"email": "stranger@example.net", "event": "open", "sg_event_id": "x1"})
    with gzip.open(sent / "events.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(e) + "\n" for e in lines)

    out = cli("events", "import", "events.json").stdout
    assert "10 event(s): 10 applied, 0 duplicate(s) ignored, 0 for unknown" in out
    out = cli("events", "import", "events.jsonl.gz").stdout
    assert "11 event(s): 10 applied, 0 duplicate(s) ignored, 1 for unknown deliveries" in out
    out = cli("events", "import", "events.json").stdout
    assert "10 event(s): 0 applied, 10 duplicate(s) ignored" in out
    got = deliveries(backend)[:10]
    assert {(r["state"], r["opened"]) for r in got} == {("delivered", 1)}


def test_import_reports_malformed_lines_as_file_line_and_keeps_the_rest(sent, cli, backend):
    rows = deliveries(backend)
    text = "\n".join(
        [
            json.dumps(event(rows[0], "delivered", 1)),
            '{"event": "open", "email": ',
            json.dumps(event(rows[1], "delivered", 1)),
            "[1, 2]",
            json.dumps({"email": rows[2]["email"], "timestamp": T0}),
        ]
    )
    (sent / "export.json").write_text(text + "\n")
    result = cli("events", "import", "export.json", expect=1)
    assert "2 event(s): 2 applied" in result.stdout
    errors = result.stderr.splitlines()
    assert errors[0].startswith("export.json:2: not valid JSON")
    assert errors[1:4] == [
        "export.json:4: expected an event object, found int",
        "export.json:4: expected an event object, found int",
        'export.json:5: an event object without an "event" type',
    ]
    assert errors[-1] == (
        "Error: 4 malformed item(s) in export.json were skipped; everything else was imported"
    )
    assert [d["state"] for d in deliveries(backend)[:2]] == ["delivered", "delivered"]


def test_import_of_a_missing_file_is_one_clear_line(workdir, cli):
    result = cli("events", "import", "nowhere.json", expect=1)
    assert result.stderr.strip() == "Error: nowhere.json: no such file"


# --- status --------------------------------------------------------------------------------------


def test_status_shows_event_outcomes_with_rates(sent, cli, backend):
    rows = deliveries(backend)
    apply(
        backend,
        *[event(r, "delivered", 10) for r in rows[:30]],
        *[event(r, "open", 100) for r in rows[:12]],
        *[event(r, "click", 200) for r in rows[:3]],
        event(rows[30], "bounce", 10, type="bounce", reason="550 5.1.1 gone"),
        event(rows[31], "deferred", 10, response="451 later"),
        event(rows[32], "dropped", 10, reason="Invalid"),
        event(rows[0], "unsubscribe", 500),
        event(rows[1], "spamreport", 500),
    )
    out = cli("status", "1").stdout
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:] if line.strip()}
    assert lines["delivered"] == ["28", "82.4%"]
    assert lines["bounced"] == ["1", "2.9%"]
    assert lines["deferred"] == ["1", "2.9%"]
    assert lines["dropped"] == ["1", "2.9%"]
    assert lines["spamreport"] == ["1", "2.9%"]
    assert lines["unsubscribed"] == ["1", "2.9%"]
    assert lines["opened"] == ["12", "35.3%"]
    assert lines["clicked"] == ["3", "8.8%"]
    assert lines["unknown"] == ["0", "0.0%"]
    assert "shares of the 34 recipient(s) handed to the transport" in out
    summary = json.loads(cli("status", "1", "--json").stdout)["sends"][0]["counts"]
    assert (summary["delivered"], summary["opened"], summary["clicked"]) == (28, 12, 3)
