"""`bulletin send`: plan a send, then deliver it crash-safely, never twice.

Each batch of recipients is claimed (`pending` → `sending`) in a committed transaction before
its request goes out, and recorded after the transport answers. A crash leaves `sending`
rows, which the next run turns into `unknown`: they are re-sent only on request.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path

from bulletin.check import Checked
from bulletin.config import Settings
from bulletin.contacts import Contact
from bulletin.errors import (
    BulletinError,
    ConfigError,
    ExitCode,
    InputError,
    Interrupted,
    Problem,
)
from bulletin.files import open_private
from bulletin.tracking import (
    FINAL_STATES,
    DatabaseError,
    SendRow,
    State,
    Tracker,
    email_hash,
)
from bulletin.transports import Outgoing, Transport, Unsent, Waiter, make_transport
from bulletin.unsubscribe import make_token, unsubscribe_url

DEV_PUBLIC_URL = "http://127.0.0.1:8025"


class Busy(BulletinError):
    """Another bulletin process holds the send lock."""

    exit_code = ExitCode.TRANSPORT


@contextmanager
def send_lock(db_path: Path) -> Iterator[None]:
    """One sending process per tracking database; the OS releases it if the holder dies.

    The lock sits next to the database's real path, so a symlinked alias of the file takes
    the same lock (issue 12); it is never opened through a symlink.
    """
    real = db_path.resolve()
    path = real.with_name(real.name + ".lock")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
    except OSError as error:  # a read-only or full disk (issue 8)
        raise DatabaseError(f"cannot create the lock file {path}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise Busy(
                f"another bulletin send is running (pid {holder}); "
                "wait for it to finish, then run the same command again"
            ) from None
        with suppress(OSError):  # the pid only helps the message above; a full disk is no reason
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


@dataclass
class Plan:
    """What a send will do, shown before asking for confirmation."""

    checked: Checked
    transport: Transport
    recipients: list[Contact]  # emailable audience after suppressions
    suppressed: int = 0
    duplicates: int = 0
    invalid_skipped: list[Problem] = field(default_factory=list)
    postal_only: int = 0
    resume: SendRow | None = None
    already_done: int = 0  # recipients of the resumed send with a final state
    unknown: int = 0

    @property
    def to_send(self) -> int:
        return max(0, len(self.recipients) - self.already_done)


@dataclass
class Report:
    send_id: int | None
    attempted: int = 0
    accepted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    stale_unknown: list[str] = field(default_factory=list)
    dropped: int = 0
    pending_left: int = 0
    interrupted: bool = False
    completed: bool = False
    counts: dict[str, int] = field(default_factory=dict)


def _tracker_if_exists(settings: Settings) -> Tracker | None:
    return (
        Tracker(settings.db_path, timeout=settings.db_timeout)
        if settings.db_path.exists()
        else None
    )


def plan_send(
    checked: Checked,
    settings: Settings,
    *,
    transport_name: str | None = None,
    skip_invalid: bool = False,
    new_send: bool = False,
    waiter: Waiter | None = None,
) -> Plan:
    """Validate everything and count the audience; writes nothing."""
    invalid: list[Problem] = []
    if checked.problems:
        row_problems = set(map(id, checked.contact_list.problems))
        blocking = [p for p in checked.problems if id(p) not in row_problems]
        if not skip_invalid or blocking:
            checked.raise_for_problems(
                "nothing was sent"
                + ("" if skip_invalid or blocking else " (--skip-invalid sends to the valid rows)")
            )
        invalid = list(checked.contact_list.problems)
    transport = make_transport(settings, transport_name, waiter)
    if transport.name != "outbox" and not (settings.secret and settings.public_url):
        raise ConfigError(
            "set BULLETIN_SECRET and BULLETIN_PUBLIC_URL in .env: every email "
            "carries a signed unsubscribe link"
        )
    recipients = checked.recipients
    plan = Plan(
        checked,
        transport,
        recipients,
        duplicates=len(checked.contact_list.duplicates),
        invalid_skipped=invalid,
        postal_only=len(checked.postal),
    )
    tracker = _tracker_if_exists(settings)
    if tracker is None:
        return plan
    with tracker:
        suppressed = tracker.suppressed_hashes()
        plan.recipients = [c for c in recipients if email_hash(c.email) not in suppressed]
        plan.suppressed = len(recipients) - len(plan.recipients)
        latest = _send_to_resume(tracker, checked, new_send)
        if latest is not None:
            plan.resume = latest
            counts = tracker.counts(latest.id)
            plan.already_done = sum(counts[state] for state in FINAL_STATES)
            plan.unknown = counts["unknown"] + counts["sending"]
    return plan


def _send_to_resume(tracker: Tracker, checked: Checked, new_send: bool) -> SendRow | None:
    """The send this run continues, or None to start one.

    `--new-send` starts a send only for a changed message: repeating the same command after a
    crash or Ctrl-C resumes that send instead of sending everyone a second copy.
    """
    latest = tracker.latest_send(checked.message.name)
    if latest is None or (new_send and latest.content_hash != checked.message.content_hash):
        return None
    _refuse_changed(latest, checked, tracker)
    return latest


def _refuse_changed(latest: SendRow, checked: Checked, tracker: Tracker) -> None:
    if latest.content_hash == checked.message.content_hash:
        return
    counts = tracker.counts(latest.id)
    done = sum(n for s, n in counts.items() if s not in ("pending", "opened", "clicked"))
    raise InputError(
        f"{checked.message.shown} has changed since send #{latest.id} ({done} recipient(s) "
        f"already processed); pass --new-send to send this version as a new send "
        "(everyone gets it again), or restore the file to resume"
    )


def _public(settings: Settings) -> tuple[str, str]:
    """Secret and base URL for unsubscribe links; the outbox can do without real ones."""
    if settings.secret and settings.public_url:
        return settings.secret, settings.public_url
    return settings.secret or secrets.token_urlsafe(32), settings.public_url or DEV_PUBLIC_URL


def dry_run(plan: Plan, settings: Settings) -> Report:
    """Render every message and count; touches neither the transport nor the database."""
    compiled = plan.checked.compiled
    secret, base = _public(settings)
    report = Report(send_id=None)
    for number, contact in enumerate(plan.recipients, 1):
        url = unsubscribe_url(base, make_token(secret, 0, number, contact.email))
        compiled.render(contact, url)
        report.attempted += 1
    return report


def send_test(plan: Plan, settings: Settings, address: str) -> str:
    """One copy, personalised as the first recipient, to a staff address; not tracked."""
    from email_validator import EmailNotValidError, validate_email

    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        address = valid.ascii_email or valid.normalized
    except EmailNotValidError as error:
        raise InputError(f"--test {address}: {error}") from None
    first = plan.recipients[0] if plan.recipients else None
    if first is None:
        raise InputError("the audience is empty: nobody to personalise the test copy as")
    contact = Contact(email=address, fields=first.fields, file=first.file, line=first.line)
    _secret, base = _public(settings)
    item = Outgoing(
        0, contact, unsubscribe_url(base, "test"), {"bulletin_test": "1"}, subject_prefix="[TEST] "
    )
    transport = plan.transport
    transport.open()
    try:
        (outcome,) = transport.send(plan.checked.compiled, [item])
    finally:
        transport.close()
    if outcome.state != State.ACCEPTED:
        raise Unsent(f"the test copy to {address} was not accepted: {outcome.error}")
    return outcome.message_id or ""


@contextmanager
def _interruptible(waiter: Waiter) -> Iterator[None]:
    """First Ctrl-C / SIGTERM: finish the request in flight, then stop. Second: stop now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if waiter.interrupted:
            raise KeyboardInterrupt
        waiter.stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def execute(
    plan: Plan,
    settings: Settings,
    *,
    limit: int | None = None,
    resend_unknown: bool = False,
    new_send: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    waiter: Waiter | None = None,
    locked: bool = False,
) -> Report:
    """Deliver the plan under the send lock (`locked`: the caller holds it); safe to re-run."""
    waiter = waiter or getattr(plan.transport, "waiter", None) or Waiter()
    checked, compiled, message = plan.checked, plan.checked.compiled, plan.checked.message
    lock = nullcontext() if locked else send_lock(settings.db_path)
    with lock, Tracker(settings.db_path, timeout=settings.db_timeout) as tracker:
        latest = _send_to_resume(tracker, checked, new_send)
        if latest is not None:
            send_id = latest.id
        else:
            send_id = tracker.create_send(
                message=message.name,
                path=message.shown,
                subject=message.subject,
                reference=message.reference,
                category=message.category,
                content_hash=message.content_hash,
                transport=plan.transport.name,
            )
        report = Report(send_id)
        report.stale_unknown = tracker.stale_to_unknown(send_id)
        if resend_unknown:
            tracker.unknown_to_pending(send_id)
            report.stale_unknown = []  # they are pending again: this run sends them
        suppressed = tracker.suppressed_hashes()
        audience = [c for c in checked.recipients if email_hash(c.email) not in suppressed]
        tracker.add_recipients(send_id, audience)
        report.dropped = tracker.drop_suppressed(send_id)
        by_key = {c.email.lower(): c for c in audience}
        secret, base = _public(settings)
        transport = plan.transport
        with _interruptible(waiter):
            transport.open()
            try:
                _deliver(
                    tracker,
                    transport,
                    compiled,
                    send_id,
                    by_key,
                    secret,
                    base,
                    limit,
                    waiter,
                    progress,
                    report,
                )
            except KeyboardInterrupt:
                # A second Ctrl-C abandons the request in flight: whether it went is unknown.
                unknown = tracker.stale_to_unknown(send_id)
                raise Interrupted(
                    f"stopped at once: {len(unknown)} recipient(s) in flight are now unknown. "
                    f"Run `bulletin send {message.name}` again to resume."
                ) from None
            finally:
                transport.close()
        report.interrupted = waiter.interrupted
        report.completed = tracker.complete_if_done(send_id)
        report.counts = tracker.counts(send_id)
        report.pending_left = report.counts["pending"]
        return report


def _deliver(
    tracker: Tracker,
    transport: Transport,
    compiled,
    send_id: int,
    by_key: dict[str, Contact],
    secret: str,
    base: str,
    limit: int | None,
    waiter: Waiter,
    progress: Callable[[int], None],
    report: Report,
) -> None:
    after = 0
    unrecorded: list[tuple[int, str, str | None, str | None]] = []
    try:
        while not waiter.interrupted:
            size = (
                transport.batch_size
                if limit is None
                else min(transport.batch_size, limit - report.attempted)
            )
            if size <= 0:
                break
            # The last batch's outcomes are committed together with this claim.
            claimed = tracker.claim(send_id, size, after, record=unrecorded)
            unrecorded = []
            if not claimed:
                break
            after = claimed[-1].id
            unrecorded = _send_batch(
                tracker, transport, compiled, send_id, claimed, by_key, secret, base
            )
            report.attempted += len(claimed)
            emails = {row.id: row.email for row in claimed}
            for delivery_id, state, _, error in unrecorded:
                if state == State.ACCEPTED:
                    report.accepted += 1
                elif state == State.FAILED:
                    report.failed.append((emails[delivery_id], error or ""))
                elif state == State.UNKNOWN:
                    report.unknown.append(emails[delivery_id])
            progress(len(claimed))
    finally:
        if unrecorded:
            tracker.record(unrecorded)


def _send_batch(
    tracker: Tracker,
    transport: Transport,
    compiled,
    send_id: int,
    claimed: list,
    by_key: dict[str, Contact],
    secret: str,
    base: str,
) -> list[tuple[int, str, str | None, str | None]]:
    """Send one claimed batch; return its outcomes (recorded by the caller)."""
    items: list[Outgoing] = []
    outcomes: list[tuple[int, str, str | None, str | None]] = []
    for row in claimed:
        contact = by_key.get(row.email_key)
        if contact is None:
            outcomes.append(
                (row.id, State.FAILED, None, "no longer in the audience or the contact lists")
            )
            continue
        token = make_token(secret, send_id, row.id, contact.email)
        items.append(
            Outgoing(
                row.id,
                contact,
                unsubscribe_url(base, token),
                {"bulletin_send": str(send_id), "bulletin_delivery": str(row.id)},
            )
        )
    try:
        results = transport.send(compiled, items) if items else []
    except Unsent as error:
        finished = [(o.delivery_id, o.state, o.message_id, o.error) for o in error.outcomes]
        done = {o.delivery_id for o in error.outcomes}
        unsent = [(i.delivery_id, State.PENDING, None, None) for i in items]
        tracker.record([u for u in unsent if u[0] not in done] + finished + outcomes)
        raise
    return outcomes + [(o.delivery_id, o.state, o.message_id, o.error) for o in results]
