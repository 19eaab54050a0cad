"""`bulletin run`: send every scheduled message that is due, exactly once; made for cron (issue 6).

A run holds the send lock from start to finish, so overlapping runs (and a manual `send`) never
interleave; the OS drops the lock when its holder dies, so a crash never blocks later runs. For
each `messages/*.md` with a `send_at`:

- not yet due → left alone;
- a completed send of the same content → already done;
- a completed send of other content → "changed after it was sent", never re-sent on its own;
- an unfinished send → resumed (`unknown` recipients are never re-sent), even past the stale
  window if anyone may already have it: the rest of the audience should get it too;
- never sent (or sent to nobody yet) and `send_at` older than the stale window → reported, not
  sent, so a machine switched on after a week does not post last week's bulletin;
- otherwise checked and sent with `--yes` semantics.

Times are compared in UTC. A naive `send_at` is Europe/London read with `fold=0` (PEP 495): a
time skipped in March (01:30 on the last Sunday) means the same instant as 02:30 BST; a time
that happens twice in October means the first of the two (BST).

Cron mails any output, so a run prints only what it sent and what went wrong, and a notice
about a message that needs a person (stale, changed, failing `check`) is printed once, not every
five minutes: the notices already given are remembered beside the database. `--verbose` shows
everything, every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING

from bulletin.config import Settings
from bulletin.errors import BulletinError, ExitCode, InputError
from bulletin.files import open_private
from bulletin.ledger import states
from bulletin.message import LONDON, Message, load_message
from bulletin.send import Busy, Report, SendLock, plan_send, send_lock
from bulletin.tracking import Tracker

if TYPE_CHECKING:
    from bulletin.delivery import SendOutcome
    from bulletin.ledger.store import SendRow
from bulletin.transports import Unsent

LOG_BYTES = 1_000_000
LOG_BACKUPS = 5
LISTED = 20  # recipients listed by address before "… and N more"
NOTICES_SUFFIX = ".run-notices.json"
# Most severe last: the exit code of a run is the most severe outcome of its messages.
SEVERITY = (
    ExitCode.OK,
    ExitCode.INVALID,
    ExitCode.PARTIAL,
    ExitCode.TRANSPORT,
    ExitCode.INTERRUPTED,
)
# A send that may have reached someone: resuming it is better than leaving it half done.
REACHED = states.REACHED


class Verdict(StrEnum):
    SENT = "sent"
    NOT_DUE = "not due"
    UNSCHEDULED = "no send_at"
    DONE = "already sent"
    STALE = "stale"
    CHANGED = "changed"
    INVALID = "invalid"
    UNSENT = "could not send"
    INTERRUPTED = "interrupted"
    UNAPPROVED = "awaiting approval"  # sign-off before send (issue 17)


# Printed once until they change.
NOTICES = {Verdict.STALE, Verdict.CHANGED, Verdict.INVALID, Verdict.UNAPPROVED}
QUIET = {Verdict.NOT_DUE, Verdict.UNSCHEDULED, Verdict.DONE}  # printed only with --verbose


@dataclass
class Considered:
    """What a run decided about one message file, and why."""

    shown: str
    verdict: Verdict
    text: str
    details: list[str] = field(default_factory=list)
    exit_code: ExitCode = ExitCode.OK
    key: str = ""  # identifies a notice, so an unchanged one is printed only once
    report: Report | None = None
    fresh: bool = True


@dataclass
class RunResult:
    now: datetime
    folder: Path
    considered: list[Considered] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # messages another process was sending

    @property
    def exit_code(self) -> ExitCode:
        """The most severe outcome: 130 interrupted > 4 transport > 3 partial > 1 invalid > 0."""
        return max((c.exit_code for c in self.considered), key=SEVERITY.index, default=ExitCode.OK)

    def lines(self, verbose: bool = False) -> list[tuple[bool, str]]:
        """(is it a problem?, text) to print; nothing at all when there was nothing to do."""
        out: list[tuple[bool, str]] = []
        if self.busy and self.idle:
            return [(False, f"{b}; this run did nothing") for b in self.busy] if verbose else []
        if verbose:
            out.append(
                (
                    False,
                    f"bulletin run at {local(self.now)}: "
                    f"{len(self.considered)} message file(s) in {self.folder}",
                )
            )
        for item in self.considered:
            if not verbose and (item.verdict in QUIET or not item.fresh):
                continue
            problem = item.exit_code != ExitCode.OK
            out.append((problem and item.verdict != Verdict.SENT, item.text))
            out += [(True, f"  {line}") for line in item.details]
        if verbose:
            out += [(False, f"{b}; this run left it to that process") for b in self.busy]
        return out

    @property
    def idle(self) -> bool:
        """Nothing was done but what `--verbose` alone shows."""
        return all(item.verdict in QUIET for item in self.considered)

    def summary(self) -> str:
        """One line for the log file."""
        if self.busy and self.idle:
            return f"run: {'; '.join(self.busy)}; did nothing"
        counts = Counter(c.verdict for c in self.considered)
        parts = ", ".join(f"{n} {verdict}" for verdict, n in counts.items()) or "no messages"
        return (
            f"run at {local(self.now)}: {len(self.considered)} message file(s): {parts}; "
            f"exit {int(self.exit_code)}"
        )


def parse_now(text: str) -> datetime:
    """An ISO date-time for `--now`, in UTC; naive means Europe/London, as for `send_at`."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date-time such as 2016-07-04T07:30") from None
    # In UTC at once: London times in the October fold never compare equal across zones.
    return (moment if moment.tzinfo else moment.replace(tzinfo=LONDON)).astimezone(UTC)


def local(moment: datetime) -> str:
    """A moment as London wall-clock time with its zone, e.g. 2016-07-04 07:30 BST."""
    return moment.astimezone(LONDON).strftime("%Y-%m-%d %H:%M %Z")


def run_due(
    settings: Settings,
    *,
    messages: Path | str = "messages",
    now: datetime | None = None,
    stale_after_hours: float | None = None,
) -> RunResult:
    """Send every due, unsent message in `messages/`, holding the send lock throughout."""
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=LONDON)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    hours = settings.stale_after_hours if stale_after_hours is None else stale_after_hours
    folder = settings.resolve(messages)
    with run_log(settings) as log, ExitStack() as stack:
        if not folder.is_dir():
            error = InputError(
                f"no messages folder at {folder}: run bulletin from the working folder "
                "(in cron: cd /path/to/folder && bulletin run) or pass --messages"
            )
            log.error("run: %s", error)
            raise error
        result = RunResult(now, folder)
        waiting: list[tuple[datetime, Message]] = []
        for path in sorted(folder.glob("*.md")):
            item, message = _scan(path, settings, now)
            if item is not None:
                result.considered.append(item)
            else:
                waiting.append((message.send_at.astimezone(UTC), message))
        for due, message in sorted(waiting, key=lambda pair: (pair[0], pair[1].name)):
            # One message at a time under its own lock: another process sending a message
            # (on SQLite) leaves this run the others; on PostgreSQL they share the send.
            try:
                lock = stack.enter_context(
                    send_lock(settings.db_url, message.name, lease_seconds=settings.lease_seconds)
                )
            except Busy as busy:
                result.busy.append(str(busy).split(";")[0])
                continue
            try:
                with stack.pop_all():
                    item = _consider(message, due, settings, now, timedelta(hours=hours), lock)
            except Busy as busy:  # PostgreSQL: another process holds the rest of the send
                result.busy.append(str(busy).split(";")[0])
                continue
            result.considered.append(item)
            if item.verdict == Verdict.INTERRUPTED:
                break
        _remember_notices(settings, result)
        for item in result.considered:
            _log_item(log, item, settings)
        log.info(settings.scrub(result.summary()))
        return result


def _scan(
    path: Path, settings: Settings, now: datetime
) -> tuple[Considered | None, Message | None]:
    """Read a message's front matter: a verdict if it is not due, else the message itself."""
    shown = _shown(path, settings)
    try:
        message, problems = load_message(
            path,
            settings.workdir,
            default_from=settings.sender,
            default_reply_to=settings.reply_to,
        )
    except InputError as error:  # not UTF-8, or gone since the folder was listed
        message, problems = None, [str(error)]
    if message is None or message.send_at is None:
        if problems and _mentions_send_at(path):
            name = path.stem if path.parent == settings.workdir / "messages" else str(path)
            return _invalid(shown, name, [str(p) for p in problems], path), None
        return Considered(shown, Verdict.UNSCHEDULED, f"{shown}: no send_at; not scheduled"), None
    due = message.send_at.astimezone(UTC)
    if due > now:
        return Considered(shown, Verdict.NOT_DUE, f"{shown}: due at {local(due)}; not yet"), None
    return None, message


def _consider(
    message: Message,
    due: datetime,
    settings: Settings,
    now: datetime,
    stale_after: timedelta,
    lock: SendLock,
) -> Considered:
    """Decide what to do with a due message, and do it."""
    shown, name = message.shown, _command_name(message, settings)
    latest, reached = _latest_send(settings, message.name)
    if latest is not None and latest.completed_at:
        if latest.content_hash == message.content_hash:
            completed = local(datetime.fromisoformat(latest.completed_at))
            return Considered(
                shown, Verdict.DONE, f"{shown}: already sent (send #{latest.id}, {completed})"
            )
        return Considered(
            shown,
            Verdict.CHANGED,
            f"{shown}: changed after it was sent (send #{latest.id}); not re-sent "
            f"automatically. To send this version to everyone again: bulletin send {name} "
            "--new-send; to stop this notice, remove its send_at",
            exit_code=ExitCode.INVALID,
            key=_key("changed", name, message.content_hash, str(latest.id)),
        )
    if latest is not None and latest.content_hash != message.content_hash:
        return Considered(
            shown,
            Verdict.CHANGED,
            f"{shown}: changed since send #{latest.id} started; not resumed automatically. "
            f"Restore the file to resume it, or send this version to everyone: "
            f"bulletin send {name} --new-send",
            exit_code=ExitCode.INVALID,
            key=_key("changed", name, message.content_hash, str(latest.id)),
        )
    late = now - due
    if late > stale_after and not reached:
        return Considered(
            shown,
            Verdict.STALE,
            f"{shown}: not sent: send_at {local(due)} was {_age(late)} ago, more than the "
            f"{stale_after.total_seconds() / 3600:g} h window (BULLETIN_STALE_AFTER_HOURS). "
            f"Send it by hand with bulletin send {name}, or change its send_at",
            exit_code=ExitCode.INVALID,
            key=_key("stale", name, message.content_hash, due.isoformat()),
        )
    return _send(message, settings, lock, resumed=latest is not None)


def _send(message: Message, settings: Settings, lock: SendLock, *, resumed: bool) -> Considered:
    from bulletin import approval
    from bulletin.check import check_message

    shown, name = message.shown, _command_name(message, settings)
    try:
        checked = check_message(str(message.path), settings, stream=True)
        if checked.message is not None and checked.message.content_hash != message.content_hash:
            raise InputError(f"{shown} changed while bulletin run was reading it; nothing sent")
        plan = plan_send(checked, settings)
        plan.approval = approval.for_send(checked, settings, name)
    except Busy:
        raise
    except approval.Unapproved as unapproved:
        return Considered(
            shown,
            Verdict.UNAPPROVED,
            f"{shown}: due but not sent: {unapproved}; the first run after that sends it "
            "(within the stale window)",
            exit_code=ExitCode.INVALID,
            key=_key("unapproved", name, str(unapproved)),
        )
    except BulletinError as error:
        lines = [str(p) for p in error.problems] or error.lines()
        return _invalid(shown, name, lines, message.path, error.exit_code)
    from bulletin.delivery import deliver

    try:
        outcome = deliver(plan, settings, lock)
    except Busy:
        raise
    except BulletinError as error:
        verdict = Verdict.INVALID if error.exit_code == ExitCode.INVALID else Verdict.UNSENT
        next_time = "" if isinstance(error, Unsent) else " (see bulletin status)"
        return Considered(
            shown,
            verdict,
            f"{shown}: could not send: {settings.scrub(str(error))} — nothing more was sent; "
            f"the next run tries again{next_time}",
            exit_code=error.exit_code,
        )
    return _sent(shown, name, outcome, resumed)


def _sent(shown: str, name: str, outcome: SendOutcome, resumed: bool) -> Considered:
    report, unknown = outcome.report, outcome.unknown
    text = outcome.brief(shown, resumed)
    details = outcome.details
    if len(details) > LISTED:
        details[LISTED:] = [
            f"… and {len(details) - LISTED} more: bulletin status {report.send_id} --csv FILE "
            "lists every recipient"
        ]
    if unknown:
        details.append(
            "check the transport's activity log; if they never arrived: "
            f"bulletin send {name} --resend-unknown"
        )
    if outcome.exit_code == ExitCode.INTERRUPTED:
        return Considered(
            shown,
            Verdict.INTERRUPTED,
            text + "; interrupted — the next run carries on",
            details,
            ExitCode.INTERRUPTED,
            report=report,
        )
    return Considered(shown, Verdict.SENT, text, details, outcome.exit_code, report=report)


def _invalid(
    shown: str,
    name: str,
    lines: list[str],
    path: Path,
    code: ExitCode = ExitCode.INVALID,
) -> Considered:
    digest = hashlib.sha256(path.read_bytes() if path.is_file() else b"").hexdigest()
    return Considered(
        shown,
        Verdict.INVALID,
        f"{shown}: due but not sent: {len(lines)} problem(s); fix them "
        f"(bulletin check {name}) and the next run sends it",
        lines,
        code,
        key=_key("invalid", name, digest, *lines),
    )


def _latest_send(settings: Settings, name: str) -> tuple[SendRow | None, bool]:
    """The message's latest send, and whether it may have reached anyone."""
    if not settings.db_exists:
        return None, False
    with Tracker(settings.db_url, timeout=settings.db_timeout) as tracker:
        latest = tracker.latest_send(name)
        if latest is None:
            return None, False
        counts = tracker.counts(latest.id)
    return latest, any(counts[state] for state in REACHED)


def _command_name(message: Message, settings: Settings) -> str:
    """How to name the message in a `bulletin send …` hint: NAME if it is in messages/."""
    default = settings.workdir / "messages" / f"{message.name}.md"
    return message.name if message.path == default else str(message.path)


def _mentions_send_at(path: Path) -> bool:
    """Is a file we cannot read meant to be scheduled? Only then is it worth a notice."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return False
    return any(line.startswith("send_at") for line in text.splitlines())


def _shown(path: Path, settings: Settings) -> str:
    try:
        return str(path.relative_to(settings.workdir))
    except ValueError:
        return str(path)


def _age(late: timedelta) -> str:
    hours = late.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


# --- notices given once ----------------------------------------------------------------------


def _remember_notices(settings: Settings, result: RunResult) -> None:
    """Mark notices printed before as not fresh; forget the ones that no longer apply.

    They are kept in the ledger (so several machines sharing one database give each notice
    once); an earlier release's side file beside the database is read the first time.
    """
    keyed = [item for item in result.considered if item.key]
    if not keyed and not settings.db_exists:
        return
    with Tracker(settings.db_url, timeout=settings.db_timeout) as ledger:
        seen = ledger.notices() or _side_file_notices(settings)
        current: dict[str, str] = {}
        for item in keyed:
            item.fresh = item.key not in seen
            current[item.key] = seen.get(item.key, result.now.isoformat(timespec="seconds"))
        if current != seen:
            ledger.remember_notices(current)


def _side_file_notices(settings: Settings) -> dict[str, str]:
    """Notices remembered by an earlier release in `bulletin.db.run-notices.json`."""
    if "://" in settings.db:
        return {}
    path = settings.db_path.with_name(settings.db_path.name + NOTICES_SUFFIX)
    try:
        seen = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(seen, dict):
        return {}
    return {str(k): str(v) for k, v in seen.items()}


# --- the log file ----------------------------------------------------------------------------


@contextmanager
def run_log(settings: Settings) -> Iterator[logging.Logger]:
    """The `bulletin.run` logger writing to BULLETIN_LOG (rotated), or nowhere if unset."""
    log = logging.getLogger("bulletin.run")
    log.setLevel(logging.INFO)
    log.propagate = False
    if settings.log_file is None:
        handler: logging.Handler = logging.NullHandler()
    else:
        path = settings.resolve(settings.log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _PrivateLog(path, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s [%(process)d] %(message)s", "%Y-%m-%dT%H:%M:%S%z"
            )
        )
    log.addHandler(handler)
    try:
        yield log
    finally:
        log.removeHandler(handler)
        handler.close()


class _PrivateLog(RotatingFileHandler):
    """BULLETIN_LOG and its rotations are created 0600, never through a symlink (issue 12)."""

    def _open(self):
        fd = open_private(Path(self.baseFilename), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _log_item(log: logging.Logger, item: Considered, settings: Settings) -> None:
    """One line per send or problem (a notice only once); addresses stay out of the log."""
    if item.verdict in QUIET or not item.fresh:
        return
    level = logging.INFO if item.exit_code == ExitCode.OK else logging.WARNING
    if item.exit_code in (ExitCode.TRANSPORT, ExitCode.INTERRUPTED):
        level = logging.ERROR
    log.log(level, settings.scrub(item.text))
