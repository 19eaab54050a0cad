"""`bulletin run`: due / not due / stale, clock changes, overlap and a killed run (issue 6).

Real components only: a `bulletin init`-ed folder, the tracking database as a SQLite file and
again on a real PostgreSQL server (the `backend` fixture), the outbox transport, and the
SendGrid stand-in for the overlap and kill tests, which start real `python -m bulletin run`
processes.
"""

from __future__ import annotations

import csv
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backends import Backend
from servers import held, slow, status

from bulletin.config import load_settings
from bulletin.errors import ExitCode
from bulletin.run import Considered, RunResult, Verdict, parse_now, run_due

SAMPLE = 34  # email recipients in the packaged contacts/coordinators.csv

MESSAGE = """\
---
subject: 'Street safety for {{{{ first_name or "neighbours" }}}}'
from: "Bromley Police <bromley.neighbourhoods@example.org>"
category: street-safety
{front}---
Dear {{{{ first_name or "Neighbour" }}}},

Please report all hate crime to 999 in an emergency, or to 101. {body}
"""


def schedule(workdir: Path, name: str, send_at: str | None, *, front: str = "", body: str = ""):
    """Write messages/NAME.md, scheduled at `send_at` (written as given, inside quotes)."""
    if send_at is not None:
        front = f'send_at: "{send_at}"\n' + front
    path = workdir / "messages" / f"{name}.md"
    path.write_text(MESSAGE.format(front=front, body=body), encoding="utf-8")
    return path


def at(text: str) -> datetime:
    return parse_now(text)


def verdicts(result: RunResult) -> dict[str, Verdict]:
    return {Path(c.shown).stem: c.verdict for c in result.considered}


def sends(db: Backend) -> list[tuple]:
    """(id, message, finished) of every send (finished: 1/0, or True/False on PostgreSQL)."""
    return db.tuples("SELECT id, message, completed_at IS NOT NULL FROM sends ORDER BY id")


def states(db: Backend, send_id: int = 1) -> dict[str, int]:
    return dict(
        db.tuples(
            "SELECT state, COUNT(*) FROM deliveries WHERE send_id = :send_id GROUP BY state",
            send_id=send_id,
        )
    )


def outbox(workdir: Path) -> list[Path]:
    return sorted((workdir / "outbox").glob("*.eml"))


@pytest.fixture
def log_file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = workdir / "logs" / "bulletin.log"
    monkeypatch.setenv("BULLETIN_LOG", str(path))
    return path


# Tests that store anything run on SQLite and on PostgreSQL (tests/backends.py): those that
# ask for `backend`, and these.
both_backends = pytest.mark.usefixtures("backend")


# --- due, not due, stale ----------------------------------------------------------------------


def test_nothing_due_prints_nothing_but_logs_a_summary(workdir, cli, log_file, backend):
    schedule(workdir, "monday", "2026-07-06T07:30")
    result = cli("run", "--now", "2026-07-06T07:29")
    assert result.stdout == "" and result.stderr == ""
    assert sends(backend) == [] and outbox(workdir) == []
    log = log_file.read_text()
    assert "INFO" in log and "2 message file(s): 1 no send_at, 1 not due; exit 0" in log


def test_a_due_message_is_sent_once_and_later_runs_are_quiet(workdir, cli, log_file, backend):
    schedule(workdir, "monday", "2026-07-06T07:30")
    first = cli("run", "--now", "2026-07-06T07:35")
    assert first.stdout == (
        f"Sent messages/monday.md (send #1): {SAMPLE} written to the outbox, 0 failed, 0 unknown\n"
    )
    assert first.stderr == ""
    assert len(outbox(workdir)) == SAMPLE
    again = cli("run", "--now", "2026-07-06T07:40")
    assert again.stdout == "" and again.stderr == ""
    assert len(outbox(workdir)) == SAMPLE
    assert sends(backend) == [(1, "monday", 1)]
    lines = log_file.read_text().splitlines()
    assert sum("Sent messages/monday.md (send #1)" in line for line in lines) == 1
    assert sum(" run at " in line for line in lines) == 2
    assert lines[-1].endswith("1 no send_at, 1 already sent; exit 0")


@both_backends
def test_verbose_says_what_was_considered_and_why(workdir, cli):
    schedule(workdir, "sent-earlier", "2026-07-06T07:00")
    cli("send", "sent-earlier", "--yes")
    schedule(workdir, "later", "2026-07-06T09:00")
    result = cli("run", "--now", "2026-07-06T08:00", "--verbose")
    out = result.stdout
    assert "bulletin run at 2026-07-06 08:00 BST: 3 message file(s)" in out
    assert "messages/eu-referendum.md: no send_at; not scheduled" in out
    assert "messages/later.md: due at 2026-07-06 09:00 BST; not yet" in out
    assert "messages/sent-earlier.md: already sent (send #1" in out
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("now", "verdict"),
    [
        ("2026-07-06T07:29:59", Verdict.NOT_DUE),
        ("2026-07-06T07:30:00", Verdict.SENT),  # due at send_at exactly
        ("2026-07-07T07:30:00", Verdict.SENT),  # exactly 24 h late is still inside the window
        ("2026-07-07T07:30:01", Verdict.STALE),
    ],
)
def test_due_and_stale_boundaries(workdir, settings, now, verdict):
    schedule(workdir, "monday", "2026-07-06T07:30")
    result = run_due(settings, now=at(now))
    assert verdicts(result)["monday"] == verdict
    assert len(outbox(workdir)) == (SAMPLE if verdict == Verdict.SENT else 0)


def test_a_stale_message_is_reported_once_and_never_sent(workdir, cli, log_file, backend):
    schedule(workdir, "last-week", "2026-06-29T07:30")
    first = cli("run", "--now", "2026-07-06T08:00", expect=1)
    assert first.stdout == ""
    assert first.stderr == (
        "messages/last-week.md: not sent: send_at 2026-06-29 07:30 BST was 7 days ago, more "
        "than the 24 h window (BULLETIN_STALE_AFTER_HOURS). Send it by hand with bulletin "
        "send last-week, or change its send_at\n"
    )
    # cron would mail the same notice every five minutes: it is given once, the exit code stays
    again = cli("run", "--now", "2026-07-06T08:05", expect=1)
    assert again.stdout == "" and again.stderr == ""
    assert "not sent: send_at" in cli("run", "--now", "2026-07-06T08:10", "-v", expect=1).stderr
    assert sends(backend) == [] and outbox(workdir) == []
    assert log_file.read_text().count("not sent: send_at") == 1
    # a wider window lets it go, from the option or from .env
    (workdir / ".env").write_text("BULLETIN_STALE_AFTER_HOURS=200\n")
    assert "Sent messages/last-week.md" in cli("run", "--now", "2026-07-06T08:15").stdout
    assert len(outbox(workdir)) == SAMPLE


@both_backends
def test_stale_after_option_overrides_the_setting(workdir, cli):
    schedule(workdir, "yesterday", "2026-07-05T07:30")
    cli("run", "--now", "2026-07-06T08:00", "--stale-after", "12", expect=1)
    assert outbox(workdir) == []
    cli("run", "--now", "2026-07-06T08:00", "--stale-after", "36")
    assert len(outbox(workdir)) == SAMPLE


# --- the clock changes ------------------------------------------------------------------------

# Europe/London, 2026: 01:00 GMT on 29 March becomes 02:00 BST; 02:00 BST on 25 October becomes
# 01:00 GMT. A naive send_at that never happens (the gap) means the same instant one hour
# later by the new clock; one that happens twice means the first (fold=0, PEP 495).
DST = [
    # send_at as written, the instant it means (UTC)
    ("2026-03-29T00:59", "2026-03-29T00:59:00+00:00"),  # just before the spring change (GMT)
    ("2026-03-29T01:30", "2026-03-29T01:30:00+00:00"),  # does not exist: 02:30 BST
    ("2026-03-29T02:00", "2026-03-29T01:00:00+00:00"),  # first minute of BST
    ("2026-10-25T00:59", "2026-10-24T23:59:00+00:00"),  # just before the October change (BST)
    ("2026-10-25T01:30", "2026-10-25T00:30:00+00:00"),  # happens twice: the first, BST
    ("2026-10-25T02:00", "2026-10-25T02:00:00+00:00"),  # just after: GMT
    ("2026-10-25T01:30:00+00:00", "2026-10-25T01:30:00+00:00"),  # the second, made explicit
]


@pytest.mark.parametrize(("send_at", "instant"), DST)
def test_send_at_across_the_clock_changes(workdir, settings, send_at, instant):
    schedule(workdir, "dst", send_at)
    moment = datetime.fromisoformat(instant)
    before = run_due(settings, now=moment - timedelta(seconds=1))
    assert verdicts(before)["dst"] == Verdict.NOT_DUE
    assert run_due(settings, now=moment).considered[-1].verdict == Verdict.SENT
    assert run_due(settings, now=moment + timedelta(hours=1)).considered[-1].verdict == (
        Verdict.DONE
    )


def test_a_yaml_timestamp_without_quotes_is_london_time_too(workdir, settings):
    schedule(workdir, "bare", None, front="send_at: 2026-10-25T01:30:00\n")
    assert verdicts(run_due(settings, now=at("2026-10-25T00:29:59+00:00")))["bare"] == (
        Verdict.NOT_DUE
    )
    assert verdicts(run_due(settings, now=at("2026-10-25T00:30:00+00:00")))["bare"] == (
        Verdict.SENT
    )


@pytest.mark.parametrize(
    ("send_at", "now", "verdict"),
    [
        # 08:00 GMT Saturday → 08:30 BST Sunday: 24.5 h on the wall clock, 23.5 h really
        ("2026-03-28T08:00", "2026-03-29T08:30", Verdict.SENT),
        # 08:00 BST Saturday → 07:30 GMT Sunday: 23.5 h on the wall clock, 24.5 h really
        ("2026-10-24T08:00", "2026-10-25T07:30", Verdict.STALE),
    ],
)
def test_the_stale_window_counts_real_hours_across_the_clock_changes(
    workdir, settings, send_at, now, verdict
):
    schedule(workdir, "weekend", send_at)
    assert verdicts(run_due(settings, now=at(now)))["weekend"] == verdict


def test_now_is_london_time_when_naive():
    assert parse_now("2026-10-25T01:30") == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert parse_now("2026-03-29T01:30") == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert parse_now("2026-07-06T07:30") == datetime(2026, 7, 6, 6, 30, tzinfo=UTC)
    assert parse_now("2026-07-06T07:30Z") == datetime(2026, 7, 6, 7, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="not an ISO date-time"):
        parse_now("next monday")


def test_a_bad_now_is_a_usage_error(workdir, cli):
    result = cli("run", "--now", "monday morning", expect=2)
    assert "not an ISO date-time" in result.stderr


# --- problems beside good messages ------------------------------------------------------------


def test_a_failing_message_is_reported_and_the_good_one_still_goes(workdir, cli, backend):
    schedule(workdir, "good", "2026-07-06T07:30")
    schedule(workdir, "bad", "2026-07-06T07:00", body="Your scheme: {{ nickname }}")
    result = cli("run", "--now", "2026-07-06T08:00", expect=1)
    assert result.stdout.startswith("Sent messages/good.md (send #1)")
    err = result.stderr.splitlines()
    assert err[0].startswith("messages/bad.md: due but not sent: 1 problem(s); fix them")
    assert err[1].startswith("  messages/bad.md:9: {{ nickname }}: no contact column 'nickname'")
    assert len(outbox(workdir)) == SAMPLE
    assert sends(backend) == [(1, "good", 1)]
    # fixed: the next run sends it
    schedule(workdir, "bad", "2026-07-06T07:00", body='Your scheme: {{ scheme or "yours" }}')
    fixed = cli("run", "--now", "2026-07-06T08:05")
    assert fixed.stdout.startswith("Sent messages/bad.md (send #2)")
    assert len(outbox(workdir)) == 2 * SAMPLE


@both_backends
def test_drafts_without_send_at_are_ignored_and_broken_scheduled_ones_reported(workdir, cli):
    (workdir / "messages" / "draft.md").write_text("no front matter yet\n", encoding="utf-8")
    (workdir / "messages" / "scrawl.md").write_bytes(b"\xff\xfe not utf-8")
    quiet = cli("run", "--now", "2026-07-06T08:00")
    assert quiet.stdout == "" and quiet.stderr == ""
    schedule(workdir, "typo", "next monday")
    result = cli("run", "--now", "2026-07-06T08:00", expect=1)
    assert "messages/typo.md: due but not sent" in result.stderr
    assert "send_at: 'next monday' is not an ISO date-time" in result.stderr


def test_a_message_changed_after_it_was_sent_is_not_sent_again(workdir, cli, backend):
    schedule(workdir, "monday", "2026-07-06T07:30")
    cli("run", "--now", "2026-07-06T07:30")
    schedule(workdir, "monday", "2026-07-06T07:30", body="Corrected after sending.")
    result = cli("run", "--now", "2026-07-06T07:35", expect=1)
    assert result.stdout == ""
    assert "messages/monday.md: changed after it was sent (send #1); not re-sent" in (result.stderr)
    assert "bulletin send monday --new-send" in result.stderr
    assert cli("run", "--now", "2026-07-06T07:40", expect=1).stderr == ""  # said once
    assert len(outbox(workdir)) == SAMPLE and sends(backend) == [(1, "monday", 1)]


@both_backends
def test_a_message_changed_during_an_unfinished_send_is_not_resumed(workdir, cli):
    schedule(workdir, "monday", "2026-07-06T07:30")
    cli("send", "monday", "--yes", "--limit", "5")
    schedule(workdir, "monday", "2026-07-06T07:30", body="Edited half way.")
    result = cli("run", "--now", "2026-07-06T07:35", expect=1)
    assert "changed since send #1 started; not resumed automatically" in result.stderr
    assert len(outbox(workdir)) == 5


# --- unfinished sends -------------------------------------------------------------------------


def test_an_unfinished_send_is_resumed_even_past_the_window(workdir, cli, backend):
    schedule(workdir, "monday", "2026-07-06T07:30")
    cli("send", "monday", "--yes", "--limit", "10")
    result = cli("run", "--now", "2026-07-09T07:30")  # three days later: some already have it
    assert result.stdout.startswith(
        f"Resumed messages/monday.md (send #1): {SAMPLE - 10} written to the outbox"
    )
    assert len(outbox(workdir)) == SAMPLE and sends(backend) == [(1, "monday", 1)]


@both_backends
def test_a_send_that_reached_nobody_goes_stale_like_a_new_one(workdir, cli, sendgrid_env):
    schedule(workdir, "monday", "2026-07-06T07:30")
    sendgrid_env.set_api_key("SG.a-different-key")  # ours is refused: nothing goes
    down = cli("run", "--now", "2026-07-06T07:30", expect=4)
    assert "could not send: SendGrid refused the API key (401" in down.stderr
    assert "the next run tries again" in down.stderr
    assert os.environ["SENDGRID_API_KEY"] not in down.stderr + down.stdout
    sendgrid_env.set_api_key(os.environ["SENDGRID_API_KEY"])
    stale = cli("run", "--now", "2026-07-08T07:30", expect=1)
    assert "messages/monday.md: not sent: send_at" in stale.stderr
    assert sendgrid_env.delivered_emails() == {}


@both_backends
def test_a_transport_that_recovers_is_used_by_the_next_run(workdir, cli, sendgrid_env):
    schedule(workdir, "monday", "2026-07-06T07:30")
    schedule(workdir, "bad", "2026-07-06T07:30", body="{{ nickname }}")
    sendgrid_env.set_api_key("SG.a-different-key")
    # 4 (could not send) outranks 1 (a message failed check)
    result = cli("run", "--now", "2026-07-06T07:30", expect=4)
    assert "messages/bad.md: due but not sent" in result.stderr
    sendgrid_env.set_api_key(os.environ["SENDGRID_API_KEY"])
    again = cli("run", "--now", "2026-07-06T07:35", expect=1)
    assert again.stdout.startswith("Resumed messages/monday.md (send #1): 34 accepted")
    assert again.stderr == ""  # the failing message was reported already
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}


@both_backends
def test_failed_recipients_exit_3_and_are_listed(workdir, cli, sendgrid_env, log_file):
    schedule(workdir, "monday", "2026-07-06T07:30")
    sendgrid_env.script(status(400))
    result = cli("run", "--now", "2026-07-06T07:30", expect=3)
    assert result.stdout.startswith("Sent messages/monday.md (send #1): 0 accepted, 34 failed")
    err = result.stderr.splitlines()
    assert err[0].startswith("  failed: ") and "SendGrid 400: Bad Request" in err[0]
    assert len(err) == 21 and err[-1].startswith("  … and 14 more: bulletin status 1 --csv")
    assert cli("run", "--now", "2026-07-06T07:35").stdout == ""  # finished: not retried
    log = log_file.read_text()
    assert "WARNING" in log and "34 failed" in log and "exit 3" in log
    for secret in (os.environ["SENDGRID_API_KEY"], os.environ["BULLETIN_SECRET"], "@example"):
        assert secret not in log


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([], ExitCode.OK),
        ([ExitCode.OK, ExitCode.INVALID], ExitCode.INVALID),
        ([ExitCode.INVALID, ExitCode.PARTIAL, ExitCode.OK], ExitCode.PARTIAL),
        ([ExitCode.PARTIAL, ExitCode.TRANSPORT, ExitCode.INVALID], ExitCode.TRANSPORT),
        ([ExitCode.TRANSPORT, ExitCode.INTERRUPTED], ExitCode.INTERRUPTED),
    ],
)
def test_the_most_severe_outcome_sets_the_exit_code(codes, expected):
    result = RunResult(datetime.now(UTC), Path("messages"))
    result.considered = [Considered("m", Verdict.SENT, "", exit_code=c) for c in codes]
    assert result.exit_code == expected


@both_backends
def test_messages_from_another_folder_are_named_by_path_in_hints(workdir, cli):
    (workdir / "scheduled").mkdir()
    path = schedule(workdir, "monday", "2026-07-06T07:30")
    path.rename(workdir / "scheduled" / "monday.md")
    sent = cli("run", "--messages", "scheduled", "--now", "2026-07-06T07:30")
    assert sent.stdout.startswith("Sent scheduled/monday.md (send #1)")
    (workdir / "scheduled" / "monday.md").write_text(
        MESSAGE.format(front='send_at: "2026-07-06T07:30"\n', body="Edited.")
    )
    changed = cli("run", "--messages", "scheduled", "--now", "2026-07-06T07:35", expect=1)
    assert f"bulletin send {workdir / 'scheduled' / 'monday.md'} --new-send" in changed.stderr


def test_the_log_file_rotates_at_1_mb_keeping_5(workdir, log_file):
    from bulletin.run import run_log

    with run_log(load_settings(workdir)) as log:
        handler = log.handlers[-1]
        assert (handler.maxBytes, handler.backupCount) == (1_000_000, 5)
        assert Path(handler.baseFilename) == log_file
    # Nothing of ours left behind between runs in one process (pytest may add its own).
    assert handler not in log.handlers
    assert not any(isinstance(h, logging.handlers.RotatingFileHandler) for h in log.handlers)


def test_a_missing_messages_folder_is_an_error(workdir, cli):
    result = cli("run", "--messages", "elsewhere", expect=1)
    assert "no messages folder at" in result.stderr and "--messages" in result.stderr


# --- overlapping and killed runs (real processes) ---------------------------------------------


def start_run(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bulletin", "run", *args],
        cwd=workdir,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def schedule_many(workdir: Path) -> None:
    """messages/monday.md to 1,005 contacts: one full SendGrid request of 1,000, then 5 more."""
    many = [
        {"email": f"person{n:04d}@example.org", "first_name": f"Person{n}", "ward": "Penge"}
        for n in range(1005)
    ]
    (workdir / "lists").mkdir()
    with (workdir / "lists" / "many.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(many[0]))
        writer.writeheader()
        writer.writerows(many)
    schedule(workdir, "monday", "2026-07-06T07:30", front="contacts: [lists/many.csv]\n")


def test_a_second_run_during_a_slow_send_exits_quietly(workdir, sendgrid_env, monkeypatch, backend):
    monkeypatch.setenv("BULLETIN_TIMEOUT", "60")  # slow, not lost: answered once both ran
    schedule(workdir, "monday", "2026-07-06T07:30")
    answer = threading.Event()
    sendgrid_env.script(held(answer))
    first = start_run(workdir, "--now", "2026-07-06T07:30")
    try:
        assert sendgrid_env.wait_accepted(1, timeout=20), first.communicate(timeout=5)
        quiet = start_run(workdir, "--now", "2026-07-06T07:35")
        told = start_run(workdir, "--now", "2026-07-06T07:35", "--verbose")
        out, err = quiet.communicate(timeout=20)
        assert (quiet.returncode, out, err) == (0, "", "")
        out, err = told.communicate(timeout=20)
        assert told.returncode == 0 and err == ""
        assert out.startswith("another bulletin send is running ")
        if backend.sqlite:  # the lock file names its holder; a PostgreSQL lock has no pid
            assert out.startswith("another bulletin send is running (pid ")
        assert out.endswith("; this run did nothing\n")
        assert first.poll() is None  # both came and went during the first run's request
    finally:
        answer.set()
        out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert out.startswith("Sent messages/monday.md (send #1): 34 accepted")
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}
    assert sends(backend) == [(1, "monday", 1)]


def test_a_killed_run_is_resumed_by_the_next_without_duplicates(
    workdir, cli, sendgrid_env, monkeypatch, backend
):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "1")  # answers scripted request by request
    monkeypatch.setenv("BULLETIN_TIMEOUT", "120")  # the run is killed while it waits
    # PostgreSQL: the killed run's rows are another holder's until its lease runs out.
    monkeypatch.setenv("BULLETIN_LEASE_SECONDS", "2")
    schedule_many(workdir)
    sendgrid_env.script(slow(60))
    doomed = start_run(workdir, "--now", "2026-07-06T07:30")
    assert sendgrid_env.wait_accepted(1, timeout=20), doomed.communicate(timeout=5)
    doomed.send_signal(signal.SIGKILL)  # mid-request: the first 1,000 went, no answer came
    doomed.wait(timeout=10)
    assert states(backend) == {"sending": 1000, "pending": 5}

    result = cli("run", "--now", "2026-07-06T07:35", expect=3)  # the lock died with its holder
    assert result.stdout.startswith(
        "Resumed messages/monday.md (send #1): 5 accepted, 0 failed, 1000 unknown"
    )
    assert "an earlier run stopped mid-request; not re-sent" in result.stderr
    assert "bulletin send monday --resend-unknown" in result.stderr
    assert states(backend) == {"unknown": 1000, "accepted": 5}
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == 1005 and set(delivered.values()) == {1}
    after = cli("run", "--now", "2026-07-06T07:40")
    assert after.stdout == "" and after.stderr == ""
    assert sendgrid_env.delivered_emails() == delivered


def test_a_stopped_run_finishes_its_request_and_the_next_run_carries_on(
    workdir, cli, sendgrid_env, monkeypatch, backend
):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "1")  # answers scripted request by request
    monkeypatch.setenv("BULLETIN_TIMEOUT", "30")
    schedule_many(workdir)
    sendgrid_env.script(slow(1))
    stopped = start_run(workdir, "--now", "2026-07-06T07:30")
    assert sendgrid_env.wait_accepted(1, timeout=20), stopped.communicate(timeout=5)
    stopped.send_signal(signal.SIGTERM)  # systemd stopping the timer's service, or a shutdown
    out, err = stopped.communicate(timeout=30)
    assert stopped.returncode == ExitCode.INTERRUPTED, err
    assert out == ""
    assert err.startswith(
        "Sent messages/monday.md (send #1): 1000 accepted, 0 failed, 0 unknown, 5 still "
        "pending; interrupted — the next run carries on"
    )
    assert states(backend) == {"accepted": 1000, "pending": 5}
    result = cli("run", "--now", "2026-07-06T07:35")
    assert result.stdout.startswith("Resumed messages/monday.md (send #1): 5 accepted")
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == 1005 and set(delivered.values()) == {1}
