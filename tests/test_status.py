"""`bulletin status`: the sends table, one send's counts, --json and --csv.

On SQLite and on PostgreSQL (the `backend` fixture), but for the SQLite file's own mode and WAL.
"""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
from test_send import SAMPLE, people, street_message

from bulletin.contacts import Contact
from bulletin.tracking import State, Tracker

CSV_START = "send_id,email,first_name,last_name,ward,state,message_id,updated_at,error"

both_backends = pytest.mark.usefixtures("backend")


@both_backends
def test_status_before_any_send_says_so(workdir, cli, backend):
    if backend.sqlite:  # no file yet
        result = cli("status", expect=1)
        assert "nothing has been sent yet" in result.stderr
    else:  # a database made by `bulletin db upgrade`, empty (as SQLite's after `suppress add`)
        assert cli("status").stdout == "No sends yet.\n"
    assert not backend.written()


@both_backends
def test_the_table_lists_every_send_with_its_counts(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "4")
    name = street_message(workdir, people(3))
    cli("send", name, "--yes")
    result = cli("status")
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:4] == ["send", "message", "created", "recipients"]
    assert {"accepted", "failed", "unknown", "pending", "subject"} <= set(header)
    first = next(line for line in lines if "eu-referendum" in line)
    assert "Key messages from the Borough Commander" in first
    assert f" {SAMPLE} " in first and " 4 " in first and f" {SAMPLE - 4} " in first
    second = next(line for line in lines if line.split()[:2] == ["2", "street"])
    assert "Street safety update for" in second


@both_backends
def test_one_send_by_number_or_by_message_name(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "4")
    by_number = cli("status", "1").stdout
    assert by_number == cli("status", "eu-referendum").stdout
    assert by_number.startswith("Send #1: eu-referendum — Key messages")
    assert "via outbox; not completed" in by_number
    counts = {
        words[0]: int(words[1])
        for words in map(str.split, by_number.splitlines()[2:])
        if len(words) >= 2 and words[1].isdigit()
    }
    assert counts["accepted"] == 4 and counts["pending"] == SAMPLE - 4
    assert counts["recipients"] == SAMPLE


@both_backends
def test_an_unknown_send_is_an_input_error(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "1")
    result = cli("status", "7", expect=1)
    assert "no send '7'" in result.stderr and "bulletin status" in result.stderr
    result = cli("status", "no-such-message", expect=1)
    assert "no send 'no-such-message'" in result.stderr


@both_backends
def test_json_has_the_documented_shape(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "4")
    name = street_message(workdir, people(3))
    cli("send", name, "--yes")
    data = json.loads(cli("status", "--json").stdout)
    assert list(data) == ["sends"]
    assert [s["id"] for s in data["sends"]] == [1, 2]
    first = data["sends"][0]
    assert {"id", "message", "subject", "created_at", "counts"} <= set(first)
    assert first["message"] == "eu-referendum"
    assert first["subject"] == "Key messages from the Borough Commander: we stand together"
    assert first["created_at"].startswith("20")
    counts = first["counts"]
    documented = {"pending", "accepted", "delivered", "deferred", "bounced", "dropped"}
    documented |= {"blocked", "spamreport", "unsubscribed", "failed", "unknown"}
    assert documented <= set(counts)
    assert all(isinstance(n, int) for n in counts.values())
    assert counts["accepted"] == 4 and counts["pending"] == SAMPLE - 4

    one = json.loads(cli("status", "2", "--json").stdout)
    assert list(one) == ["sends"] and len(one["sends"]) == 1
    assert one["sends"][0]["id"] == 2 and one["sends"][0]["counts"]["accepted"] == 3


@both_backends
def test_csv_has_one_row_per_recipient(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "4")
    path = workdir / "deliveries.csv"
    result = cli("status", "--csv", str(path))
    assert f"{SAMPLE} recipient row(s)" in result.stdout
    text = path.read_text(encoding="utf-8")
    assert text.startswith(CSV_START)
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == SAMPLE
    assert {r["send_id"] for r in rows} == {"1"}
    assert sum(r["state"] == "accepted" for r in rows) == 4
    margaret = next(r for r in rows if r["email"] == "margaret.okafor@example.org")
    assert margaret["first_name"] == "Margaret" and margaret["ward"] == "Penge and Cator"
    assert margaret["message_id"].startswith("<")


@both_backends
def test_csv_neutralises_spreadsheet_formulas(workdir, cli, backend):
    rows = people(2)
    rows[0].update(first_name='=HYPERLINK("http://example.com")', last_name="+44 20")
    rows[1].update(first_name="@SUM(A1)", last_name="-1", ward="=1+1")
    name = street_message(workdir, rows)
    cli("send", name, "--yes")
    # Tab and CR cannot come through a contact list (cells are trimmed, CR is refused in
    # names), but an error text can start with anything.
    with Tracker(backend.db) as tracker:
        send_id = tracker.create_send(
            message="other",
            path="messages/other.md",
            subject="Other",
            reference="X",
            category="",
            content_hash="0",
            transport="outbox",
        )
        tracker.add_recipients(
            send_id,
            [
                Contact("tab@example.org", {"first_name": "\tTab"}, "lists/x.csv", 2),
                Contact("cr@example.org", {"first_name": "\rCR"}, "lists/x.csv", 3),
            ],
        )
        claimed = tracker.claim(send_id, 10)
        tracker.record([(c.id, State.FAILED, None, "-ERR rejected") for c in claimed])
    path = workdir / "out.csv"
    cli("status", "--csv", str(path))
    with path.open(newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    by_email = {r["email"]: r for r in written}
    first, second = by_email["person00001@example.org"], by_email["person00002@example.org"]
    assert first["first_name"] == '\'=HYPERLINK("http://example.com")'
    assert first["last_name"] == "'+44 20"
    assert second["first_name"] == "'@SUM(A1)"
    assert second["last_name"] == "'-1"
    assert second["ward"] == "'=1+1"
    assert by_email["tab@example.org"]["first_name"] == "'\tTab"
    assert by_email["cr@example.org"]["first_name"] == "'\rCR"
    assert by_email["cr@example.org"]["error"] == "'-ERR rejected"
    for row in written:
        for column, value in row.items():
            if column != "send_id":
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (column, value)


@both_backends
def test_csv_to_an_unwritable_path_is_one_clear_line(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "1")
    result = cli("status", "--csv", "no/such/folder/out.csv", expect=1)
    assert "cannot write no/such/folder/out.csv" in result.stderr
    assert "Traceback" not in result.stderr


@both_backends
def test_csv_of_one_send(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    name = street_message(workdir, people(3))
    cli("send", name, "--yes")
    path = workdir / "street.csv"
    cli("status", "street", "--csv", str(path))
    rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    assert [r["email"] for r in rows] == [p["email"] for p in people(3)]
    assert {r["send_id"] for r in rows} == {"2"}


def test_status_reads_a_private_wal_database(workdir, cli):
    """SQLite only: the file's mode and journal."""
    cli("send", "eu-referendum", "--yes")
    db = workdir / "bulletin.db"
    assert db.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cli("status")
    assert db.stat().st_mode & 0o777 == 0o600
