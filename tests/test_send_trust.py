"""Issue 11: the right people, the right count, the right letter.

Each finding of the issue, reproduced at the command line on real files and a real database.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from test_send import SAMPLE, deliveries, outbox_recipients, states

from bulletin.message import SCAFFOLD_BODY, SCAFFOLD_PREHEADER
from bulletin.send import send_lock

CSV = Path("contacts") / "coordinators.csv"
FIRST, SECOND = "margaret.okafor@example.org", "david.oneill@example.com"
NEWCOMERS = ("rosa.newton@example.org", "tom.baker@example.net")


def replace_addresses(workdir: Path, pairs: dict[str, str]) -> None:
    text = (workdir / CSV).read_text(encoding="utf-8")
    for old, new in pairs.items():
        assert old in text
        text = text.replace(old, new)
    (workdir / CSV).write_text(text, encoding="utf-8")


def add_people(workdir: Path, emails: list[str], ward: str = "Penge and Cator") -> None:
    with (workdir / CSV).open("a", encoding="utf-8") as handle:
        for n, email in enumerate(emails):
            handle.write(f"{email},New{n},Person,{ward},coordinator,,,,\n")


def terminal(workdir: Path, args: list[str], act, timeout: float = 60) -> tuple[int, str]:
    """Run bulletin on a pseudo-terminal; `act(process, master)` once the question shows."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bulletin", *args],
        cwd=workdir,
        env=dict(os.environ, COLUMNS="100"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    output, acted = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not acted and b"recipient(s)?" in output:
                act(process, master)
                acted = True
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
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


# --- 1. new contacts are sent a finished send --------------------------------------------------


def test_people_who_joined_a_finished_send_get_their_copy(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    replace_addresses(workdir, dict(zip((FIRST, SECOND), NEWCOMERS, strict=True)))
    result = cli("send", "eu-referendum", "--yes")
    assert (
        f"Resuming:  send #1 — {SAMPLE - 2} already done, 2 to go; 2 joined since, 0 unknown, "
        "0 suppressed" in result.stderr
    )
    assert "Send #1: 2 written to the outbox" in result.stdout
    sent = outbox_recipients(workdir)
    assert len(sent) == SAMPLE + 2 == len(set(sent))
    assert set(NEWCOMERS) <= set(sent)
    assert states(workdir / "bulletin.db") == {"accepted": SAMPLE + 2}
    assert "Nothing to send" in cli("send", "eu-referendum", "--yes").stdout


def test_people_who_left_before_their_turn_are_not_sent(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "5")
    replace_addresses(workdir, {"priya.raman@example.net": NEWCOMERS[0]})  # Priya: 3rd, sent
    last = "gurpreet.kaur@example.net"
    text = (workdir / CSV).read_text(encoding="utf-8")
    assert last in text
    (workdir / CSV).write_text(
        "\n".join(line for line in text.splitlines() if last not in line) + "\n", "utf-8"
    )
    result = cli("send", "eu-referendum", "--yes")
    assert "1 joined since" in result.stderr and "1 left the list (not sent)" in result.stderr
    sent = outbox_recipients(workdir)
    assert last not in sent and NEWCOMERS[0] in sent and len(sent) == len(set(sent))
    assert last not in deliveries(workdir / "bulletin.db")


# --- 2. the number confirmed is the number sent -------------------------------------------------


def test_the_count_shown_is_the_count_sent_after_suppressions_forgets_and_joins(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "30")
    pending = [e for e, r in deliveries(workdir / "bulletin.db").items() if r["state"] == "pending"]
    cli("suppress", "add", pending[0])
    cli("forget", pending[1])
    add_people(workdir, [f"joiner{n}@example.org" for n in range(4)])
    result = cli("send", "eu-referendum", "--yes")
    # 4 still pending, 2 of whom are now suppressed (forget suppresses too): 2 + 4 joined.
    assert "6 to go; 4 joined since, 0 unknown, 2 suppressed" in result.stderr
    assert "Send #1: 6 written to the outbox" in result.stdout
    assert len(outbox_recipients(workdir)) == 36


def test_resend_unknown_is_counted_in_the_confirmation(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    with sqlite3.connect(workdir / "bulletin.db") as db:
        db.execute("UPDATE deliveries SET state = 'unknown' WHERE id <= 3")
    result = cli("send", "eu-referendum", "--yes", expect=3)  # ends with 3 unknown: exit 3
    assert "3 unknown (use --resend-unknown" in result.stdout
    result = cli("send", "eu-referendum", "--yes", "--resend-unknown", "--limit", "2")
    assert "2 to go; 0 joined since, 3 unknown (re-sent: --resend-unknown)" in result.stderr
    assert "1 more after this --limit" in result.stderr
    assert "Send #1: 2 written to the outbox" in result.stdout


def test_the_prompt_states_the_number_then_sent(workdir, cli):
    cli("send", "eu-referendum", "--yes", "--limit", "30")
    add_people(workdir, ["joiner@example.org"])
    code, output = terminal(
        workdir, ["send", "eu-referendum"], lambda process, master: os.write(master, b"y\n")
    )
    assert code == 0, output
    assert "Send to 5 recipient(s)?" in output
    assert "Send #1: 5 written to the outbox" in output


# --- 3. an unedited scaffold or an empty body fails check ---------------------------------------


def test_an_unedited_scaffold_fails_check_and_run_skips_it(workdir, cli):
    cli("new", "draft")
    path = workdir / "messages" / "draft.md"
    assert SCAFFOLD_BODY in path.read_text(encoding="utf-8")
    result = cli("check", "draft", expect=1)
    assert f"messages/draft.md:14: the body still has the scaffold's text {SCAFFOLD_BODY!r}" in (
        result.stderr
    )
    assert "messages/draft.md:4: preheader is still the scaffold's text" in result.stderr
    path.write_text(
        path.read_text(encoding="utf-8").replace("# send_at:", "send_at:"), encoding="utf-8"
    )
    result = cli("run", "--now", "2016-07-04T08:00", expect=1)
    assert "messages/draft.md: due but not sent" in result.stderr
    assert not (workdir / "outbox").exists()


def test_an_empty_body_fails_check(workdir, cli):
    (workdir / "messages" / "empty.md").write_text(
        '---\nsubject: Hello\nfrom: "Bromley Police <bromley.neighbourhoods@example.org>"\n'
        "---\n\n  \n",
        encoding="utf-8",
    )
    result = cli("check", "empty", expect=1)
    assert "messages/empty.md:6: the body is empty" in result.stderr
    assert SCAFFOLD_PREHEADER not in result.stderr


# --- 4. every audience value must match someone -------------------------------------------------


def test_a_misspelt_audience_value_is_a_problem_with_suggestions(workdir, cli):
    path = workdir / "messages" / "eu-referendum.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("---\n", "---\naudience:\n  ward: [Penge & Cator, Clock House]\n", 1),
        "utf-8",
    )
    result = cli("check", "eu-referendum", expect=1)
    assert (
        "audience: ward: no contact has 'Penge & Cator' (did you mean 'Penge and Cator'?)"
        in result.stderr
    )
    cli("send", "eu-referendum", "--yes", expect=1)
    assert not (workdir / "outbox").exists()


# --- 5. exit codes that tell the truth ----------------------------------------------------------


def test_ctrl_c_at_the_prompt_exits_130_with_one_line(workdir):
    code, output = terminal(
        workdir, ["send", "eu-referendum"], lambda process, _: process.send_signal(signal.SIGINT)
    )
    assert code == 130, output
    assert output.strip().endswith("Error: interrupted at the prompt; nothing was sent")
    assert "Aborted" not in output and "Traceback" not in output
    assert not (workdir / "outbox").exists()


def test_end_of_input_at_the_prompt_exits_130(workdir):
    code, output = terminal(
        workdir, ["send", "eu-referendum"], lambda _, master: os.write(master, b"\x04")
    )
    assert code == 130, output
    assert "interrupted at the prompt; nothing was sent" in output


def test_a_second_send_refuses_before_touching_any_row(workdir, cli, db_path):
    cli("send", "eu-referendum", "--yes", "--limit", "3")
    with sqlite3.connect(db_path) as db:  # as if a live send had claimed these
        db.execute("UPDATE deliveries SET state = 'sending' WHERE state = 'pending' AND id <= 6")
    before = states(db_path)
    with send_lock(db_path):
        result = cli("send", "eu-referendum", "--yes", expect=4)
    assert "another bulletin send is running" in result.stderr
    assert "unknown" not in result.stderr and "Resuming" not in result.stderr
    assert states(db_path) == before == {"accepted": 3, "sending": 3, "pending": SAMPLE - 6}


def test_a_resumed_send_ending_with_unknown_recipients_exits_3(workdir, cli, db_path):
    cli("send", "eu-referendum", "--yes", "--limit", "3")
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE deliveries SET state = 'unknown' WHERE state = 'accepted'")
    result = cli("send", "eu-referendum", "--yes", expect=3)
    assert f"Send #1: {SAMPLE - 3} written to the outbox" in result.stdout
    assert "failed or are unknown" in result.stderr


# --- 6. settings typos and ranges ---------------------------------------------------------------


def test_an_unknown_setting_is_warned_about_with_the_nearest_name(workdir, cli):
    (workdir / ".env").write_text("BULLETIN_TRANSPROT=smtp\n", encoding="utf-8")
    result = cli("check", "eu-referendum")
    assert result.stderr.count("BULLETIN_TRANSPROT") == 1
    assert (
        "warning: BULLETIN_TRANSPROT (in .env) is not a bulletin setting and is ignored; "
        "did you mean BULLETIN_TRANSPORT?" in result.stderr
    )
    result = cli("check", "eu-referendum", env={"SMTP_PASWORD": "x"})
    assert "SMTP_PASWORD (in the environment)" in result.stderr
    assert "did you mean SMTP_PASSWORD?" in result.stderr


def test_out_of_range_settings_are_refused_naming_where_they_came_from(workdir, cli):
    (workdir / ".env").write_text("SMTP_CONNECTIONS=0\n", encoding="utf-8")
    result = cli("check", "eu-referendum", expect=1)
    assert result.stderr.strip() == (
        "Error: SMTP_CONNECTIONS=0 is out of range: use 1 to 32; fix it in .env"
    )
    (workdir / ".env").unlink()
    result = cli("check", "eu-referendum", expect=1, env={"SMTP_PORT": "99999"})
    assert result.stderr.strip() == (
        "Error: SMTP_PORT=99999 is out of range: use 1 to 65535; "
        "fix SMTP_PORT in the environment (it overrides .env)"
    )
    result = cli("check", "eu-referendum", expect=1, env={"BULLETIN_TIMEOUT": "soon"})
    assert "BULLETIN_TIMEOUT='soon' is not a number; fix BULLETIN_TIMEOUT in the environment" in (
        result.stderr
    )


# --- 7. sample contacts stay out of a real working folder ---------------------------------------


def test_init_makes_an_empty_contact_list_and_no_example(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result = cli("init")
    assert "contacts/contacts.csv shows the columns" in result.stdout
    assert (
        (tmp_path / "contacts" / "contacts.csv")
        .read_text(encoding="utf-8")
        .startswith("email,first_name,last_name,ward")
    )
    assert list((tmp_path / "contacts").iterdir()) == [tmp_path / "contacts" / "contacts.csv"]
    assert list((tmp_path / "messages").iterdir()) == []
    assert "0 contacts OK" in cli("contacts", "check").stdout


def test_sample_domains_are_a_problem_for_a_real_transport(workdir, cli, monkeypatch):
    for name, value in {
        "SENDGRID_API_KEY": "SG.not-a-real-key",
        "BULLETIN_SECRET": "a-test-secret-value-0123456789abcdef",
        "BULLETIN_PUBLIC_URL": "https://bulletin.example.org",
    }.items():
        monkeypatch.setenv(name, value)
    result = cli("check", "eu-referendum", expect=1)
    assert (
        "contacts/coordinators.csv:2: 34 address(es) on reserved example domains "
        "(such as example.org) would be sent through sendgrid" in result.stderr
    )
    result = cli("send", "eu-referendum", "--yes", expect=1)
    assert "reserved example domains" in result.stderr
    assert not (workdir / "bulletin.db").exists()
    # The outbox mails nobody, and a loopback stand-in is a test: no problem.
    assert "OK" in cli("send", "eu-referendum", "--dry-run", "--transport", "outbox").stdout + "OK"
    monkeypatch.setenv("BULLETIN_SENDGRID_URL", "http://127.0.0.1:9")
    cli("check", "eu-referendum")


# --- 8. the do-not-send list takes addresses only -----------------------------------------------


def test_suppress_add_refuses_what_is_not_an_address(workdir, cli):
    result = cli("suppress", "add", "ok@example.org", "not-an-email", expect=1)
    assert result.stderr.strip().splitlines() == [
        "Error: 'not-an-email' is not an email address (An email address must have an "
        "@-sign.); nothing was added"
    ]
    assert not (workdir / "bulletin.db").exists() or "0 suppressed" in (
        cli("suppress", "list").stderr
    )


# --- bulletin run never extends a finished send ------------------------------------------------


def schedule_example(workdir: Path) -> None:
    path = workdir / "messages" / "eu-referendum.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("---\n", "---\nsend_at: 2016-07-04T07:30\n", 1), "utf-8")


def test_run_never_extends_a_finished_send_but_send_does(workdir, cli):
    schedule_example(workdir)
    result = cli("run", "--now", "2016-07-04T08:00")
    assert "Sent messages/eu-referendum.md (send #1): 34 written to the outbox" in result.stdout
    add_people(workdir, ["late.joiner@example.org"])
    assert cli("run", "--now", "2016-07-04T08:05").stdout == ""
    assert "late.joiner@example.org" not in outbox_recipients(workdir)
    result = cli("send", "eu-referendum", "--yes")
    assert "1 to go; 1 joined since" in result.stderr
    assert "late.joiner@example.org" in outbox_recipients(workdir)


def test_run_resumes_an_unfinished_send_with_its_late_joiners(workdir, cli):
    schedule_example(workdir)
    cli("send", "eu-referendum", "--yes", "--limit", "4")
    add_people(workdir, ["late.joiner@example.org"])
    result = cli("run", "--now", "2016-07-04T08:00")
    assert "Resumed messages/eu-referendum.md (send #1): 31 written to the outbox" in result.stdout
    sent = outbox_recipients(workdir)
    assert "late.joiner@example.org" in sent and len(sent) == len(set(sent)) == 35
