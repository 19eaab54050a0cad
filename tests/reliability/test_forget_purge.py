"""`bulletin forget EMAIL` and `bulletin purge --older-than AGE` (issue 8).

Forgetting must leave no trace of the person in the database files themselves (the bytes on
disk, write-ahead log included), keep every send's totals, keep them unmailable, stop a later
webhook event from bringing their details back, and list the spreadsheet rows the user must
delete. Purging must drop old sends' per-recipient details, keep their totals, and never let a
purged send be "resumed" into a second copy for everyone.

They run on SQLite and on PostgreSQL (the `backend` fixture). The bytes on disk are checked on
SQLite, where bulletin owns the file; a PostgreSQL server keeps old row versions and its WAL
until it vacuums and recycles them, which is the server's administration, not bulletin's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from backends import Backend
from reliability_harness import integrity, raw_bytes

from bulletin.config import load_settings
from bulletin.privacy import parse_age, purge

PERSON = "zebedee.quartermaine@example.org"
FIRST, LAST, WARD = "Zebedee", "Quartermaine", "Plaistow and Sundridge"
OTHERS = [f"neighbour{n}@example.org" for n in range(5)]


def write_list(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "ward"])
        writer.writerows(rows)


def people(workdir: Path) -> None:
    for old in (workdir / "contacts").glob("*.csv"):
        old.unlink()
    write_list(
        workdir / "contacts" / "volunteers.csv",
        [(e, "Nia", "Example", "Penge") for e in OTHERS[:2]]
        + [(PERSON, FIRST, LAST, WARD)]
        + [(e, "Nia", "Example", "Penge") for e in OTHERS[2:]],
    )


def events_for(db: Backend, email: str, kinds: list[str]) -> list[dict]:
    row = db.rows(
        "SELECT id, send_id FROM deliveries WHERE email_key = :email ORDER BY id DESC", email=email
    )[0]
    return [
        {
            "event": kind,
            "email": email,
            "timestamp": 1467360000 + n,
            "sg_event_id": f"event-{row['id']}-{kind}-{n}",
            "reason": f"550 5.1.1 <{email}>: mailbox full" if kind == "bounce" else None,
            "useragent": "Mozilla/5.0",
            "ip": "192.0.2.1",
            "bulletin_send": str(row["send_id"]),
            "bulletin_delivery": str(row["id"]),
        }
        for n, kind in enumerate(kinds)
    ]


def text_anywhere(db: Backend, needles: list[str]) -> list[str]:
    """Every table and column where any needle appears (case-insensitive)."""
    found = []
    for table in db.tables():
        for row in db.rows(f"SELECT * FROM {table}"):
            for column, value in row.items():
                text = str(value or "").lower()
                found += [f"{table}.{column}" for n in needles if n.lower() in text]
    return found


def no_trace_on_disk(db: Backend, needles: list[str]) -> None:
    """SQLite only (see the module docstring): not in the file or its WAL, and the file sound."""
    if db.sqlite:
        disk = raw_bytes(db.db).lower()
        assert not [n for n in needles if n.lower().encode() in disk], "still in the files"
        assert integrity(db.db) == "ok"


def status_counts(cli) -> dict:
    return {s["id"]: s["counts"] for s in json.loads(cli("status", "--json").stdout)["sends"]}


def test_forget_leaves_no_trace_keeps_totals_and_keeps_them_unmailed(
    workdir, cli, sendgrid_env, backend
):
    people(workdir)
    cli("send", "eu-referendum", "--yes")
    delivered = events_for(backend, PERSON, ["delivered", "open", "click"])
    (workdir / "events.json").write_text(json.dumps(delivered), encoding="utf-8")
    cli("events", "import", "events.json")
    before = status_counts(cli)
    needles = [PERSON, FIRST, LAST, WARD]
    assert text_anywhere(backend, needles)

    result = cli("forget", PERSON.upper())
    assert result.stdout.splitlines() == [
        f"Forgot {PERSON.upper()}: 1 delivery record(s) in 1 send(s), 3 event(s), 0 outbox "
        "file(s). Kept a suppression (a hash of the address only), so no later send mails them.",
        f"contacts/volunteers.csv:4: still lists {PERSON.upper()}; delete this row yourself",
    ]
    assert text_anywhere(backend, needles) == []
    no_trace_on_disk(backend, needles)
    assert status_counts(cli) == before  # the send's totals are unchanged

    # A late event about them (SendGrid retries for days) does not bring their details back.
    again = [dict(e, sg_event_id="late-open") for e in delivered]
    (workdir / "late.json").write_text(json.dumps(again), encoding="utf-8")
    cli("events", "import", "late.json")
    unmatched = [dict(e, bulletin_delivery="999", sg_event_id="late-2") for e in again]
    (workdir / "late2.json").write_text(json.dumps(unmatched), encoding="utf-8")
    cli("events", "import", "late2.json")
    assert text_anywhere(backend, needles) == []

    # Still on the list: the next message skips them; the others get it.
    sendgrid_env.reset()
    (workdir / "messages" / "next.md").write_text(
        (workdir / "messages" / "eu-referendum.md").read_text(encoding="utf-8"), encoding="utf-8"
    )
    cli("send", "next", "--yes")
    assert set(sendgrid_env.delivered_emails()) == set(OTHERS)
    assert cli("forget", PERSON).stdout.startswith(f"Forgot {PERSON}: 0 delivery record(s)")


def test_forget_deletes_their_outbox_files_and_works_without_a_database(workdir, cli, backend):
    assert "No contact list names them any more." in cli("forget", PERSON).stdout
    assert backend.written()  # the suppression had to be kept somewhere
    cli("suppress", "remove", PERSON)
    people(workdir)
    cli("send", "eu-referendum", "--yes")
    files = sorted((workdir / "outbox").glob("*.eml"))
    mine = [f for f in files if PERSON.encode() in f.read_bytes()]
    assert len(mine) == 1
    assert "1 outbox file(s)" in cli("forget", PERSON).stdout
    assert not mine[0].exists() and len(list((workdir / "outbox").glob("*.eml"))) == 5


def test_forget_refuses_something_that_is_not_an_address(workdir, cli):
    result = cli("forget", "Zebedee", expect=1)
    assert result.stderr == (
        "Error: 'Zebedee' is not an email address; write e.g. name@example.org\n"
    )


def backdate(db: Backend, send_id: int, when: str) -> None:
    db.execute("UPDATE sends SET created_at = :when WHERE id = :id", when=when, id=send_id)


def test_purge_drops_old_details_keeps_totals_and_never_resends(
    workdir, cli, sendgrid_env, backend
):
    people(workdir)
    cli("send", "eu-referendum", "--yes")  # send 1: will be old
    write_list(workdir / "lists" / "recent.csv", [("recent@example.com", "Ro", "Cent", "Penge")])
    text = (workdir / "messages" / "eu-referendum.md").read_text(encoding="utf-8")
    (workdir / "messages" / "recent.md").write_text(
        text.replace("---\n", "---\ncontacts: [lists/recent.csv]\n", 1), encoding="utf-8"
    )
    cli("send", "recent", "--yes")  # send 2: recent
    (workdir / "events.json").write_text(
        json.dumps(events_for(backend, PERSON, ["delivered", "open"])), encoding="utf-8"
    )
    cli("events", "import", "events.json")
    backdate(backend, 1, "2024-06-01T09:00:00+00:00")
    before = status_counts(cli)

    dry = cli("purge", "--older-than", "400d", "--dry-run").stdout
    assert dry.startswith("Would purge 1 send(s) made before ")
    assert "(#1): 6 delivery record(s), 2 event(s); their totals stay in bulletin status." in dry
    assert status_counts(cli) == before and text_anywhere(backend, [PERSON])

    done = cli("purge", "--older-than", "400d").stdout
    assert "Purged 1 send(s)" in done and "6 delivery record(s), 2 event(s), 0 outbox" in done
    assert status_counts(cli) == before  # totals kept, for both sends
    assert text_anywhere(backend, [PERSON, FIRST, *OTHERS]) == []
    no_trace_on_disk(backend, [PERSON])
    assert text_anywhere(backend, ["recent@example.com"])  # the recent send is untouched
    assert cli("purge", "--older-than", "400d").stdout.startswith("Nothing to purge")

    # Resuming the purged send must not mail everyone again.
    sendgrid_env.reset()
    result = cli("send", "eu-referendum", "--yes")
    assert "Nothing to send" in result.stdout and sendgrid_env.requests == 0


def test_a_purged_unfinished_send_refuses_to_resume(workdir, cli, sendgrid_env, backend):
    people(workdir)
    cli("send", "eu-referendum", "--yes", "--limit", "2")
    backdate(backend, 1, "2020-01-01T00:00:00+00:00")
    cli("purge", "--older-than", "2y")
    sendgrid_env.reset()
    result = cli("send", "eu-referendum", "--yes", expect=1)
    assert "send #1 was purged" in result.stderr and "--new-send" in result.stderr
    assert sendgrid_env.requests == 0


def test_purge_ages_are_days_weeks_or_years(workdir, cli):
    assert [parse_age(t).days for t in ("400d", "400", "8w", "2y", " 3 D ")] == [
        400,
        400,
        56,
        730,
        3,
    ]
    result = cli("purge", "--older-than", "soon", expect=2)
    assert "Invalid value for --older-than: 'soon': write a number of days" in result.stderr
    config = load_settings(workdir, environ={})
    assert purge(config, parse_age("1d")).sends == []  # no database yet: nothing to do
