"""`bulletin send`: check first, summary, confirmation, dry run, test copy, limit, resume.

Everything runs against real components: a `bulletin init`-ed folder, the tracking database as
a real SQLite file and again on a real PostgreSQL server (the `backend` fixture) and, where a
network transport matters, the SendGrid stand-in.
"""

from __future__ import annotations

import csv
import os
import select
import subprocess
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from backends import Backend, as_backend
from sqlalchemy.engine import RowMapping

SAMPLE = 34  # email recipients in the packaged contacts/coordinators.csv
FIRST = "margaret.okafor@example.org"  # its first row
IDENTITY = "Metropolitan Police Service, Bromley Borough"  # the example's sender name

STREET = """\
---
subject: 'Street safety update for {{ first_name or "neighbour" }}'
from: bromley.neighbourhoods@example.org
category: street-safety
reference: BR-TEST-1
contacts: [lists/people.csv]
---
Dear {{ first_name or "Neighbour" }},

Please report all hate crime to 999 in an emergency, or to 101.
"""


# --- helpers shared by the send test files -----------------------------------------------------


def people(count: int, domain: str = "example.org") -> list[dict[str, str]]:
    """`count` fictional contacts with distinct addresses."""
    return [
        {
            "email": f"person{n:05d}@{domain}",
            "first_name": f"Person{n}",
            "last_name": "Example",
            "ward": "Penge and Cator",
        }
        for n in range(1, count + 1)
    ]


def write_contacts(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def street_message(workdir: Path, rows: list[dict[str, str]], text: str = STREET) -> str:
    """messages/street.md sent to `rows` (lists/people.csv); returns the message name."""
    write_contacts(workdir / "lists" / "people.csv", rows)
    (workdir / "messages" / "street.md").write_text(text, encoding="utf-8")
    return "street"


def deliveries(db: Backend | Path, send_id: int | None = None) -> dict[str, RowMapping]:
    """email (lower case) → its delivery row, read straight from the database."""
    db = as_backend(db)
    if send_id is None:
        send_id = db.scalar("SELECT MAX(id) FROM sends")
    rows = db.rows("SELECT * FROM deliveries WHERE send_id = :send_id", send_id=send_id)
    return {row["email_key"]: row for row in rows}


def states(db: Backend | Path, send_id: int | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in deliveries(db, send_id).values():
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def outbox_recipients(workdir: Path) -> list[str]:
    """The To address of every .eml in the outbox (one entry per file)."""
    return [
        message_from_bytes(path.read_bytes(), policy=policy.default)["To"].addresses[0].addr_spec
        for path in sorted((workdir / "outbox").glob("*.eml"))
    ]


# Tests that store anything run on SQLite and on PostgreSQL (tests/backends.py): those that
# ask for `backend`, and these.
both_backends = pytest.mark.usefixtures("backend")


# --- check first -------------------------------------------------------------------------------


def add_invalid_row(workdir: Path) -> int:
    """Append a row with a broken address to the sample list; returns its line number."""
    path = workdir / "contacts" / "coordinators.csv"
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text += "\n"
    text += "not-an-address,Broken,Row,Penge and Cator,coordinator,,,,\n"
    path.write_text(text, encoding="utf-8")
    return text.rstrip("\n").count("\n") + 1


def test_an_invalid_contact_row_stops_the_send_before_anything_is_written(workdir, cli, backend):
    line = add_invalid_row(workdir)
    result = cli("send", "eu-referendum", "--yes", expect=1)
    assert f"contacts/coordinators.csv:{line}: 'not-an-address'" in result.stderr
    assert "nothing was sent" in result.stderr
    assert "--skip-invalid" in result.stderr
    assert not backend.written()
    assert not (workdir / "outbox").exists()


def test_skip_invalid_sends_the_valid_rows_and_reports_the_others(workdir, cli, backend):
    line = add_invalid_row(workdir)
    result = cli("send", "eu-referendum", "--yes", "--skip-invalid")
    assert f"skipped: contacts/coordinators.csv:{line}:" in result.stderr
    assert "1 invalid row(s)" in result.stderr
    assert f"{SAMPLE} written to the outbox" in result.stdout
    rows = deliveries(backend)
    assert len(rows) == SAMPLE and "not-an-address" not in rows
    assert len(outbox_recipients(workdir)) == SAMPLE


def test_a_broken_message_is_refused_even_with_skip_invalid(workdir, cli, backend):
    path = workdir / "messages" / "eu-referendum.md"
    path.write_text(
        path.read_text(encoding="utf-8").replace("{{ first_name", "{{ nickname", 1),
        encoding="utf-8",
    )
    result = cli("send", "eu-referendum", "--yes", "--skip-invalid", expect=1)
    assert "nickname" in result.stderr
    assert not backend.written()


# --- summary and confirmation ------------------------------------------------------------------


@both_backends
def test_summary_shows_subject_sender_transport_audience_and_skips(workdir, cli):
    # A second list repeating one address, and one address on the do-not-send list.
    write_contacts(
        workdir / "contacts" / "extra.csv",
        [{"email": "David.ONeill@example.com", "first_name": "David"}],
    )
    cli("suppress", "add", "priya.raman@example.net")
    result = cli("send", "eu-referendum", "--dry-run")
    summary = result.stderr
    assert "Subject:   Key messages from the Borough Commander: we stand together" in summary
    assert f'From:      "{IDENTITY}" <bromley.neighbourhoods@example.org>' in summary
    assert "Transport: outbox" in summary and "nothing is emailed" in summary
    assert f"Audience:  {SAMPLE - 1} email recipient(s)" in summary
    assert "Skipped:   1 suppressed, 1 duplicate row(s)" in summary
    assert "contacts/extra.csv:2: David.ONeill@example.com is also on" in summary


def test_summary_names_the_sendgrid_transport(workdir, cli, sendgrid_env):
    result = cli("send", "eu-referendum", "--dry-run")
    assert f"Transport: SendGrid ({sendgrid_env.url})" in result.stderr
    assert sendgrid_env.requests == 0


def test_without_yes_and_without_a_terminal_it_refuses_rather_than_hangs(workdir, cli, backend):
    result = cli("send", "eu-referendum", expect=1)
    assert "pass --yes" in result.stderr
    assert not backend.written()
    assert not (workdir / "outbox").exists()


def on_terminal(workdir: Path, answer: str, timeout: float = 60) -> tuple[int, str]:
    """Run `bulletin send eu-referendum` on a pseudo-terminal, answering its question."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bulletin", "send", "eu-referendum"],
        cwd=workdir,
        env=dict(os.environ, COLUMNS="100"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not answered and b"recipient(s)?" in output:
                os.write(master, answer.encode() + b"\n")
                answered = True
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            output += chunk
        return process.wait(timeout=timeout), output.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def test_on_a_terminal_it_asks_and_no_means_nothing_is_sent(workdir):
    code, output = on_terminal(workdir, "n")
    assert f"Send to {SAMPLE} recipient(s)?" in output
    assert code == 1 and "cancelled; nothing was sent" in output
    assert not (workdir / "outbox").exists()


@both_backends
def test_on_a_terminal_yes_sends(workdir):
    code, output = on_terminal(workdir, "y")
    assert code == 0, output
    assert f"Send #1: {SAMPLE} written to the outbox" in output
    assert len(outbox_recipients(workdir)) == SAMPLE


# --- dry run and test copies -------------------------------------------------------------------


def test_dry_run_renders_everything_and_touches_neither_transport_nor_database(
    workdir, cli, sendgrid_env, backend
):
    result = cli("send", "eu-referendum", "--dry-run")
    assert f"Dry run: rendered {SAMPLE} message(s); nothing was sent" in result.stdout
    assert sendgrid_env.requests == 0
    assert not backend.written()
    assert not (workdir / "bulletin.db.lock").exists()


def test_dry_run_with_the_outbox_writes_no_files(workdir, cli, backend):
    cli("send", "eu-referendum", "--dry-run")
    assert not (workdir / "outbox").exists()
    assert not backend.written()


def test_test_copy_goes_to_one_staff_address_personalised_as_the_first_contact(
    workdir, cli, sendgrid_env, backend
):
    result = cli("send", "eu-referendum", "--test", "duty.officer@example.net")
    assert "not tracked" in result.stdout
    assert sendgrid_env.requests == 1
    (request,) = sendgrid_env.accepted
    assert request["emails"] == ["duty.officer@example.net"]
    (personalization,) = request["body"]["personalizations"]
    assert personalization["subject"].startswith("[TEST] Key messages")
    assert "Margaret" in personalization["substitutions"].values()  # the first contact's name
    assert not backend.written()


def test_test_copy_through_the_outbox(workdir, cli, backend):
    cli("send", "eu-referendum", "--test", "duty.officer@example.net")
    (path,) = (workdir / "outbox").glob("*.eml")
    mail = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert mail["To"].addresses[0].addr_spec == "duty.officer@example.net"
    assert mail["Subject"] == "[TEST] Key messages from the Borough Commander: we stand together"
    assert "Dear Margaret," in mail.get_body(("plain",)).get_content()
    assert not backend.written()


def test_test_copy_and_dry_run_together_are_a_usage_error(workdir, cli, sendgrid_env):
    result = cli(
        "send", "eu-referendum", "--dry-run", "--test", "duty.officer@example.net", expect=2
    )
    assert "--test" in result.stderr
    assert sendgrid_env.requests == 0


def test_test_copy_rejects_a_bad_address(workdir, cli):
    result = cli("send", "eu-referendum", "--test", "not an address", expect=1)
    assert "--test not an address" in result.stderr
    assert not (workdir / "outbox").exists()


# --- limit, resume, changed messages -----------------------------------------------------------


def test_limit_sends_the_next_n_and_a_rerun_continues(workdir, cli, backend):
    result = cli("send", "eu-referendum", "--yes", "--limit", "10")
    assert "10 written to the outbox" in result.stdout
    assert f"{SAMPLE - 10} still pending" in result.stdout
    assert "again to continue" in result.stdout
    assert states(backend) == {"accepted": 10, "pending": SAMPLE - 10}
    cli("send", "eu-referendum", "--yes", "--limit", "10")
    assert states(backend) == {"accepted": 20, "pending": SAMPLE - 20}
    result = cli("send", "eu-referendum", "--yes")
    assert f"{SAMPLE - 20} written to the outbox" in result.stdout
    sent = outbox_recipients(workdir)
    assert len(sent) == SAMPLE == len(set(sent))
    result = cli("send", "eu-referendum", "--yes")
    assert "Nothing to send" in result.stdout
    assert len(outbox_recipients(workdir)) == SAMPLE


def test_resume_after_a_partial_send_never_resends_accepted_recipients(
    workdir, cli, sendgrid_env, backend
):
    cli("send", "eu-referendum", "--yes", "--limit", "7")
    first = set(sendgrid_env.delivered_emails())
    assert len(first) == 7
    result = cli("send", "eu-referendum", "--yes")
    assert "Resuming:  send #1 — 7 already done, 27 to go; 0 joined since" in result.stderr
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}
    assert states(backend) == {"accepted": SAMPLE}


def test_a_changed_message_after_a_partial_send_is_refused_unless_new_send(workdir, cli, backend):
    cli("send", "eu-referendum", "--yes", "--limit", "5")
    path = workdir / "messages" / "eu-referendum.md"
    path.write_text(path.read_text(encoding="utf-8") + "\nP.S. One more thing.\n", "utf-8")

    result = cli("send", "eu-referendum", "--yes", expect=1)
    assert "has changed since send #1" in result.stderr and "--new-send" in result.stderr
    assert len(outbox_recipients(workdir)) == 5
    assert states(backend, 1) == {"accepted": 5, "pending": SAMPLE - 5}

    result = cli("send", "eu-referendum", "--yes", "--new-send")
    assert f"Send #2: {SAMPLE} written to the outbox" in result.stdout
    assert states(backend, 2) == {"accepted": SAMPLE}
    assert states(backend, 1) == {"accepted": 5, "pending": SAMPLE - 5}  # the old send is untouched


def test_repeating_a_new_send_command_resumes_it_rather_than_sending_twice(workdir, cli, backend):
    cli("send", "eu-referendum", "--yes", "--limit", "5")
    path = workdir / "messages" / "eu-referendum.md"
    path.write_text(path.read_text(encoding="utf-8") + "\nP.S. One more thing.\n", "utf-8")
    cli("send", "eu-referendum", "--yes", "--new-send", "--limit", "5")
    # The same command again (say, from the shell history after a Ctrl-C) continues send #2.
    result = cli("send", "eu-referendum", "--yes", "--new-send")
    assert "Resuming:  send #2 — 5 already done" in result.stderr
    assert f"Send #2: {SAMPLE - 5} written to the outbox" in result.stdout
    assert backend.scalar("SELECT COUNT(*) FROM sends") == 2
    second = list((workdir / "outbox").glob("2-*.eml"))
    assert len(second) == SAMPLE
    assert states(backend, 2) == {"accepted": SAMPLE}


def test_a_contact_removed_from_the_list_mid_send_is_not_sent(workdir, cli, backend):
    name = street_message(workdir, people(6))
    cli("send", name, "--yes", "--limit", "2")
    street_message(workdir, people(6)[:5])  # person00006 leaves the list before the re-run
    result = cli("send", name, "--yes")
    assert "3 to go; 0 joined since, 0 unknown, 0 suppressed, 1 left the list" in result.stderr
    assert "3 written to the outbox" in result.stdout and "1 left the list" in result.stdout
    # The send no longer owes them a copy: their pending row goes (issue 11).
    assert "person00006@example.org" not in deliveries(backend)
    assert "person00006@example.org" not in outbox_recipients(workdir)


# --- the outbox transport ----------------------------------------------------------------------


def test_outbox_writes_private_eml_files_and_says_nothing_was_emailed(workdir, cli, backend):
    result = cli("send", "eu-referendum", "--yes")
    assert "Nothing was emailed" in result.stdout
    folder = workdir / "outbox"
    assert folder.stat().st_mode & 0o777 == 0o700
    files = list(folder.glob("*.eml"))
    assert len(files) == SAMPLE
    assert {path.stat().st_mode & 0o777 for path in files} == {0o600}
    assert not list(folder.glob("*.tmp"))
    rows = deliveries(backend)
    mail = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    address = mail["To"].addresses[0].addr_spec.lower()
    assert rows[address]["message_id"] == mail["Message-ID"]


@pytest.mark.parametrize("option", ["--transport", "--transport=smtp"])
def test_an_unconfigured_transport_is_a_configuration_error(
    workdir, cli, option, monkeypatch, backend
):
    monkeypatch.setenv("SMTP_HOST", "")
    args = ["send", "eu-referendum", "--yes"]
    args += [option, "sendgrid"] if option == "--transport" else [option]
    result = cli(*args, expect=1)
    assert ("SENDGRID_API_KEY" if option == "--transport" else "SMTP_HOST") in result.stderr
    assert not backend.written()
