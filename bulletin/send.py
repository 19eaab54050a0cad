"""`bulletin send`: plan a send, then deliver it crash-safely, never twice.

Each batch of recipients is claimed (`pending` → `sending`) in a committed transaction before
its request goes out, and recorded after the transport answers. A crash leaves `sending`
rows, which the next run turns into `unknown`: they are re-sent only on request.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import operator
import os
import queue
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bulletin.check import Checked, check_transport_limits
from bulletin.config import Settings
from bulletin.contacts import Contact, address_digest
from bulletin.errors import (
    BulletinError,
    ConfigError,
    ExitCode,
    InputError,
    Interrupted,
    Problem,
)
from bulletin.feedback import feedback_url
from bulletin.feedback import link_maker as feedback_link_maker
from bulletin.files import open_private
from bulletin.ledger.keys import purged_text
from bulletin.ledger.states import State
from bulletin.publish import DEV_PUBLIC_URL, record_send
from bulletin.tracking import DatabaseError, Tracker

if TYPE_CHECKING:
    from bulletin.ledger.store import Counts, SendRow
from bulletin.transports import Outgoing, Transport, Unsent, Waiter, make_transport
from bulletin.unsubscribe import link_maker as unsubscribe_link_maker
from bulletin.unsubscribe import make_token, unsubscribe_url


class Busy(BulletinError):
    """Another bulletin process holds the send lock (or the send, where one holder is needed)."""

    exit_code = ExitCode.TRANSPORT


@dataclass(frozen=True)
class Lease:
    """This process's name on a send (a `leases` row), renewed with every batch it claims."""

    holder: str
    host: str
    pid: int
    seconds: float

    @classmethod
    def new(cls, seconds: float = 60.0) -> Lease:
        host, pid = socket.gethostname(), os.getpid()
        return cls(f"{host}:{pid}:{secrets.token_hex(4)}", host, pid, seconds)


@dataclass
class SendLock:
    """A held send lock (what `send_lock` yields): proof for `delivery.deliver`.

    `exclusive`: nobody else can be sending this message (SQLite's OS lock), so every
    `sending` row found is a dead run's. Otherwise (PostgreSQL) other processes may share the
    send, each under its own `lease`, and only rows of expired leases are dead.
    """

    path: Path
    held: bool = True
    message: str | None = None
    lease: Lease = field(default_factory=Lease.new)
    exclusive: bool = True


def _busy(what: str) -> Busy:
    return Busy(f"{what}; wait for it to finish, then run the same command again")


@contextmanager
def send_lock(
    db_path: Path | str, message: str | None = None, *, lease_seconds: float = 60.0
) -> Iterator[SendLock]:
    """Hold the right to send `message` (or, without one, the whole database: forget, purge).

    SQLite: OS locks beside the database's real path, so a symlinked alias of the file takes
    the same locks (issue 12); never opened through a symlink. `<db>.lock` is taken shared by
    senders and exclusively for the whole database; `.<db>.locks/<message>.lock` admits one
    sender per message, so two messages send at once. Released when the holder dies.
    PostgreSQL: senders share a send under leases (rows the ledger writes as the send starts);
    the whole database is a session lock on the server, which it drops with a dead holder.
    """
    lease = Lease.new(lease_seconds)
    if isinstance(db_path, str) and "://" in db_path:
        scheme = Path(db_path.split("://", 1)[0])
        if message is not None:  # the lease is taken in `execute`, once the send is known
            held = SendLock(scheme, message=message, lease=lease, exclusive=False)
            try:
                yield held
            finally:
                held.held = False
            return
        from bulletin.ledger.store import server_send_lock

        with server_send_lock(db_path) as got:
            if not got:
                raise _busy("another bulletin send is running against this database")
            held = SendLock(scheme, lease=lease)
            try:
                yield held
            finally:
                held.held = False
        return
    real = Path(db_path).resolve()
    whole = real.with_name(real.name + ".lock")
    with _flock(whole, exclusive=message is None) as got:
        if not got:
            holder = _holder(whole)
            raise _busy("another bulletin send is running" + (f" (pid {holder})" if holder else ""))
        if message is None:
            held = SendLock(whole, lease=lease)
            try:
                yield held
            finally:
                held.held = False
            return
        own = _message_lock_path(real, message)
        with _flock(own, exclusive=True) as got_message:
            if not got_message:
                holder = _holder(own) or "?"
                raise _busy(f"another bulletin send is running (pid {holder}, sending {message})")
            held = SendLock(own, message=message, lease=lease)
            try:
                yield held
            finally:
                held.held = False


def _message_lock_path(real: Path, message: str) -> Path:
    """`.<db>.locks/<name>-<digest>.lock`: readable, one file per message name; a hidden
    folder, so `bulletin.db*` still names the database's own files (backups, tests)."""
    digest = hashlib.sha256(message.encode()).hexdigest()[:16]
    readable = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in message)[:40]
    return real.with_name(f".{real.name}.locks") / f"{readable}-{digest}.lock"


def _holder(path: Path) -> str:
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            return os.pread(fd, 32, 0).decode(errors="replace").strip()
        finally:
            os.close(fd)
    return ""


@contextmanager
def _flock(path: Path, *, exclusive: bool) -> Iterator[bool]:
    """flock `path` without waiting; yields whether it was got. An exclusive holder writes its
    pid into the file (it only helps the Busy message)."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = open_private(path, os.O_RDWR | os.O_CREAT)
    except OSError as error:  # a read-only or full disk (issue 8)
        raise DatabaseError(f"cannot create the lock file {path}: {error.strerror}") from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        if exclusive:
            with suppress(OSError):  # a full disk is no reason to refuse
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield True
        finally:
            if exclusive:
                with suppress(OSError):  # empty again: a pid found there names a live holder
                    os.ftruncate(fd, 0)
    finally:
        os.close(fd)


@dataclass
class Plan:
    """What a send will do, shown before asking for confirmation.

    Computed once, per recipient, against the ledger of the send it resumes: `to_send` is the
    number the person confirms, and `execute` never sends more than that. The audience is not
    held: `audience()` reads it again (issue 13: a million recipients in flat memory).
    """

    checked: Checked
    transport: Transport
    recipient_count: int = 0  # emailable audience after suppressions
    suppressed: int = 0
    duplicates: int = 0
    invalid_skipped: list[Problem] = field(default_factory=list)
    postal_only: int = 0
    resume: SendRow | None = None
    already_done: int = 0  # audience members with a final state in the resumed send
    pending: int = 0  # audience members still pending in the resumed send
    joined: int = 0  # audience members the resumed send has no row for: they get a copy now
    unknown: int = 0  # audience members whose copy's fate is unknown (re-sent on request)
    left: int = 0  # pending rows of people no longer in the audience: never sent
    limit: int | None = None
    resend_unknown: bool = False
    approval: Any = None  # approval.Standing of this version, set before `execute` (issue 17)
    # The do-not-send list's digests as planned (those people are left out of `audience()`).
    suppressed_hashes: frozenset[str] = frozenset()
    hashes: Callable[[str], set[str]] | None = None  # the ledger's `hashes`, keyed like them

    @property
    def due(self) -> int:
        """Everyone this send still owes a copy, before `--limit`."""
        if self.resume is None:
            return self.recipient_count
        return self.pending + self.joined + (self.unknown if self.resend_unknown else 0)

    @property
    def to_send(self) -> int:
        """The number confirmed and then sent (at most: a later suppression only lowers it)."""
        return self.due if self.limit is None else min(self.due, self.limit)

    def audience(self) -> Iterator[Contact]:
        """The emailable audience after suppressions, in order, read again (streamed)."""
        recipients = self.checked.iter_recipients()
        if not self.suppressed_hashes or self.hashes is None:
            return recipients
        return (c for c in recipients if not self.is_suppressed(c))

    def is_suppressed(self, contact: Contact) -> bool:
        """On the do-not-send list as planned."""
        suppressed, hashes = self.suppressed_hashes, self.hashes
        return bool(suppressed) and hashes is not None and bool(hashes(contact.email) & suppressed)

    @property
    def recipients(self) -> list[Contact]:
        """`audience()` as a list: for small audiences (tests, a test copy)."""
        return list(self.audience())


class AudienceKeys:
    """The audience's lower-cased addresses as digests (`address_digest`): a resume's `in`
    test without holding a million strings."""

    def __init__(self, contacts: Iterable[Contact]) -> None:
        self._digests = {address_digest(c.email.lower()) for c in contacts}

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and address_digest(key) in self._digests

    def __len__(self) -> int:
        return len(self._digests)


@dataclass
class Report:
    send_id: int | None
    attempted: int = 0
    accepted: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    stale_unknown: list[str] = field(default_factory=list)
    dropped: int = 0
    left: int = 0  # pending rows removed: those people are no longer in the audience
    pending_left: int = 0
    interrupted: bool = False
    completed: bool = False
    counts: Counts | dict[str, int] = field(default_factory=dict)


def _tracker_if_exists(settings: Settings) -> Tracker | None:
    return (
        Tracker(settings.db_url, timeout=settings.db_timeout, secret=settings.secret)
        if settings.db_exists
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
    limit: int | None = None,
    resend_unknown: bool = False,
) -> Plan:
    """Validate everything and count, per recipient, what the send will do; writes nothing.

    Call it under the send lock when the plan is to be executed: the ledger cannot then change
    between the count shown and the send.
    """
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
    known = len(checked.problems)
    check_transport_limits(checked, settings, transport.name)  # `--transport` may differ
    if len(checked.problems) > known:
        raise InputError("nothing was sent", checked.problems[known:])
    if transport.name != "outbox" and not (settings.secret and settings.public_url):
        raise ConfigError(
            "set BULLETIN_SECRET and BULLETIN_PUBLIC_URL in .env: every email "
            "carries a signed unsubscribe link"
        )
    plan = Plan(
        checked,
        transport,
        duplicates=len(checked.contact_list.duplicates),
        invalid_skipped=invalid,
        postal_only=checked.postal_count,
        limit=limit,
        resend_unknown=resend_unknown,
    )
    tracker = _tracker_if_exists(settings)
    if tracker is None:
        plan.recipient_count = checked.recipient_count
        return plan
    with tracker:
        suppressed = tracker.suppressed_hashes()
        if suppressed:  # else no need to hash 100,000 addresses twice each
            plan.suppressed_hashes, plan.hashes = frozenset(suppressed), tracker.hashes
            plan.recipient_count = sum(1 for _ in plan.audience())
        else:
            plan.recipient_count = checked.recipient_count
        plan.suppressed = checked.recipient_count - plan.recipient_count
        latest = _send_to_resume(tracker, checked, new_send)
        if latest is not None:
            plan.resume = latest
            _count_against_ledger(plan, tracker)
    return plan


def _count_against_ledger(plan: Plan, tracker: Tracker) -> None:
    """Sort each audience member by their row in the resumed send (issue 11).

    People who joined since have no row and are owed a copy; people who left are never sent
    (`execute` removes their pending rows); a purged send's rows are gone, so nobody is owed.
    A resume holds the send's states and the audience's digests: more memory than a fresh send.
    """
    send = plan.resume
    assert send is not None
    if tracker.is_purged(send.id):
        if not send.completed_at:
            raise InputError(purged_text(send.id))
        plan.already_done = plan.recipient_count
        return
    ledger = tracker.recipient_states(send.id)
    audience = AudienceKeys(plan.checked.iter_recipients())  # the suppressed too: not "left"
    for contact in plan.audience():
        state = ledger.get(contact.email.lower())
        if state is None:
            plan.joined += 1
        elif state == State.PENDING:
            plan.pending += 1
        elif state in (State.SENDING, State.UNKNOWN):
            plan.unknown += 1
        else:
            plan.already_done += 1
    plan.left = sum(
        1 for key, state in ledger.items() if state == State.PENDING and key not in audience
    )


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
    done = counts.total - counts[State.PENDING]
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


def _feedback_links(
    compiled, secret: str, base: str, send_id: int
) -> Callable[[int, str], str] | None:
    """`link(delivery_id, email)`: a delivery's signed "Was this useful?" link (issue 18);
    None if the message asks not."""
    if compiled.message.feedback is None:
        return None
    return feedback_link_maker(secret, base, send_id)


def dry_run(plan: Plan, settings: Settings) -> Report:
    """Render every message and count; touches neither the transport nor the database."""
    compiled = plan.checked.compiled
    secret, base = _public(settings)
    report = Report(send_id=None)
    for number, contact in enumerate(plan.audience(), 1):
        url = unsubscribe_url(base, make_token(secret, 0, number, contact.email))
        compiled.render(contact, url)
        report.attempted += 1
    return report


@dataclass(frozen=True, slots=True, eq=False)
class StaffCopy(Contact):
    """The first recipient's fields, addressed to staff: To names no contact (issue 16)."""

    @property
    def name(self) -> str:
        return ""


def send_test(plan: Plan, settings: Settings, address: str) -> str:
    """One copy, personalised as the first recipient, to a staff address; not tracked."""
    from email_validator import EmailNotValidError, validate_email

    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        address = valid.ascii_email or valid.normalized
    except EmailNotValidError as error:
        raise InputError(f"--test {address}: {error}") from None
    first = next(plan.audience(), None)
    if first is None:
        raise InputError("the audience is empty: nobody to personalise the test copy as")
    contact = StaffCopy(email=address, fields=first.fields, file=first.file, line=first.line)
    _secret, base = _public(settings)
    item = Outgoing(
        0,
        contact,
        unsubscribe_url(base, "test"),
        {"bulletin_test": "1"},
        subject_prefix="[TEST] ",
        feedback_url=feedback_url(base, "test"),
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
    new_send: bool = False,
    progress: Callable[[int], None] = lambda n: None,
    waiter: Waiter | None = None,
    locked: bool | SendLock = False,
) -> Report:
    """Deliver the plan under the send lock (`locked`: the caller holds it); safe to re-run.

    Sends at most `plan.to_send` copies, to the plan's audience only: people who joined since
    the send began get a pending row, people who left lose theirs, suppressed people's pending
    rows are dropped. With nothing to send it still does that bookkeeping (and completes the send).
    On PostgreSQL other processes may be sending the same send meanwhile, each under its lease.
    """
    from bulletin import approval

    waiter = waiter or getattr(plan.transport, "waiter", None) or Waiter()
    checked, message = plan.checked, plan.checked.message
    if plan.approval is None:  # sign-off cannot be bypassed by a caller that forgot it
        plan.approval = approval.for_send(checked, settings, message.name)
    if isinstance(locked, SendLock):
        lock: Any = nullcontext(locked)
    elif locked:  # a caller's own lock on the whole database (SQLite: nobody else sends)
        lease = Lease.new(settings.lease_seconds)
        alone = "://" not in str(settings.db_url)
        lock = nullcontext(SendLock(Path(str(settings.db_url)), lease=lease, exclusive=alone))
    else:
        lock = send_lock(settings.db_url, message.name, lease_seconds=settings.lease_seconds)
    with (
        lock as held,
        Tracker(settings.db_url, timeout=settings.db_timeout, secret=settings.secret) as tracker,
    ):
        lease = held.lease
        with tracker.transaction():  # one send per message, however many processes start it
            tracker.serialise_message(message.name)
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
                record_send(tracker, message, send_id)  # its public page (issue 21)
            if not tracker.take_lease(send_id, lease):
                raise _busy("bulletin forget or purge is running against this database")
            if not tracker.is_purged(send_id):
                # Queue only the people the send has no row for, still under the message's
                # lock: processes that join the send (or a resume) find nearly everyone queued,
                # and reading its keys is cheaper than inserting them all again.
                known = tracker.recipient_states(send_id) if latest is not None else {}
                tracker.add_recipients(
                    send_id, _to_queue(plan, known), fields=merge_fields(checked.compiled)
                )
                del known
        try:
            return _execute(
                plan, settings, tracker, held, send_id, waiter, progress, resumed=latest is not None
            )
        finally:
            tracker.release_lease(send_id, lease.holder)


# Contact fields every delivery row has a column for (the To name and the ward).
LEDGER_COLUMNS = frozenset({"email", "first_name", "last_name", "ward"})


def merge_fields(compiled) -> list[str]:
    """The contact fields a copy of this message is built from (its placeholders', layouts
    included) beyond the row's own columns: queued with each row (`deliveries.fields`)."""
    used = {key for key, _ in compiled.slots.keys if not key.startswith("@")}
    return sorted(used - LEDGER_COLUMNS)  # those are the row's own columns


def _to_queue(plan: Plan, known: Container[str]) -> Iterator[Contact]:
    """The plan's audience read again, less the people the send has a row for.

    The lists are read a second time, so they are checked to hold the same people, in the same
    order, as the plan counted: else nothing is queued (the caller's transaction rolls back)."""
    digest = hashlib.blake2b(digest_size=16)
    for contact in plan.checked.iter_recipients():  # everyone: the digest is of all of them
        key = contact.email.lower()
        digest.update(key.encode() + b"\n")
        if plan.is_suppressed(contact):
            continue
        if key not in known:
            yield contact
    if plan.checked.audience_digest and digest.hexdigest() != plan.checked.audience_digest:
        raise InputError(
            "the contact lists changed while the send was being planned; nothing was sent. "
            "Run the same command again to plan it anew"
        )


class _ListedContacts:
    """email key → Contact, read from the lists on first use: for rows queued without their
    merge values (by a bulletin before revision 0006). Only such a resume holds the audience."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._by_key: dict[str, Contact] | None = None

    def get(self, key: str) -> Contact | None:
        if self._by_key is None:
            self._by_key = {c.email.lower(): c for c in self._plan.audience()}
        return self._by_key.get(key)


def _contact_for(row, listed) -> Contact | None:
    """The contact a claimed row's copy is built for: from the merge values queued with it."""
    if row.fields is None:
        return listed.get(row.email_key)
    values = {
        "email": row.email,
        "first_name": row.first_name or "",
        "last_name": row.last_name or "",
        "ward": row.ward or "",
    }
    if row.fields:
        values.update(json.loads(row.fields))
    return Contact(row.email, values, "ledger", row.id)


def _execute(
    plan: Plan,
    settings: Settings,
    tracker: Tracker,
    held: SendLock,
    send_id: int,
    waiter: Waiter,
    progress: Callable[[int], None],
    *,
    resumed: bool = True,
) -> Report:
    """Deliver a send joined under its lease; `resumed`: it existed before this run (else this
    run made it from this audience)."""
    from bulletin import approval

    compiled, message, lease = plan.checked.compiled, plan.checked.message, held.lease
    report = Report(send_id)
    approval.record_send(tracker, send_id, plan.approval)
    if tracker.is_purged(send_id):  # finished and purged: nothing is owed (see the plan)
        report.completed, report.counts = True, tracker.counts(send_id)
        return report
    tracking = getattr(plan.transport, "tracking", None)
    if tracking is not None:  # what the transport asked for is shown by status (issue 19)
        tracker.note_tracking(send_id, **tracking)
    # A `sending` row of a dead holder is a crashed run's: its fate is unknown. Under SQLite's
    # lock that is every one; on PostgreSQL, those whose holder's lease has expired.
    report.stale_unknown = tracker.resolve_stale(send_id, lease.holder, everyone=held.exclusive)
    # The plan confirmed is the audience: plan_send already left out the suppressed, under
    # this same lock; anyone suppressed since (a webhook) is dropped from the ledger below.
    # A send created just now holds only its audience's rows: nobody left, nothing unknown.
    keys: Container[str] = AudienceKeys(plan.audience()) if resumed else ()
    if plan.resend_unknown and resumed:
        if not held.exclusive and tracker.other_holders(send_id, lease.holder):
            raise _busy(
                f"--resend-unknown needs send #{send_id} to itself, and another bulletin "
                "process is sending it"
            )
        tracker.unknown_to_pending(send_id, keys)
        # They are pending again: this run sends them.
        report.stale_unknown = [e for e in report.stale_unknown if e.lower() not in keys]
    report.dropped = tracker.drop_suppressed(send_id)
    report.left = tracker.remove_left(send_id, keys) if resumed else 0
    del keys
    by_key = _ListedContacts(plan)
    secret, base = _public(settings)
    transport = plan.transport
    if not plan.to_send and not held.exclusive:
        _refuse_if_others_sending(tracker, send_id, lease)
    if plan.to_send:
        with _interruptible(waiter):
            transport.open()
            try:
                with tracker.keeping_connection():  # one connection for every batch
                    _deliver(
                        tracker,
                        transport,
                        compiled,
                        send_id,
                        by_key,
                        secret,
                        base,
                        plan.to_send,
                        waiter,
                        progress,
                        report,
                        lease,
                    )
                if not held.exclusive:  # the send is finished only when theirs are answered
                    report.stale_unknown += _wait_for_others(tracker, send_id, lease, waiter)
            except KeyboardInterrupt:
                # A second Ctrl-C abandons the requests in flight: whether they went is unknown.
                unknown = tracker.release_lease(send_id, lease.holder)
                raise Interrupted(
                    f"stopped at once: {len(unknown)} recipient(s) in flight are now "
                    f"unknown. Run `bulletin send {message.name}` again to resume."
                ) from None
            finally:
                transport.close()
    report.interrupted = waiter.interrupted
    report.completed = tracker.complete_if_done(send_id)
    report.counts = tracker.counts(send_id)
    report.pending_left = report.counts[State.PENDING]
    return report


def _refuse_if_others_sending(tracker: Tracker, send_id: int, lease: Lease) -> None:
    """Nothing for this process to send while another holds the rest of the send in flight:
    say so (exit 4, and `bulletin run` stays quiet) instead of "0 accepted"."""
    if not tracker.others_in_flight(send_id, lease.holder):
        return
    others = [h for h in tracker.holders(send_id) if h.holder != lease.holder]
    live = [h for h in others if h.live]
    if live:
        who = ", ".join(f"{h.host} pid {h.pid}" for h in live[:3])
        raise _busy(f"another bulletin send is running ({who}, sending send #{send_id})")
    until = min((h.expires_at for h in others), default="")
    raise _busy(
        f"another bulletin send is running (send #{send_id}: a sender that stopped answering "
        f"holds it{f' until {until}' if until else ''}; then its rows become unknown)"
    )


def _wait_for_others(tracker: Tracker, send_id: int, lease: Lease, waiter: Waiter) -> list[str]:
    """Nothing left to claim: wait until the other holders' requests are answered, or their
    leases expire (their rows then become unknown), so the send can be completed."""
    stale: list[str] = []
    while not waiter.interrupted and tracker.others_in_flight(send_id, lease.holder):
        if not waiter.wait(min(0.5, lease.seconds / 4)):
            break
        tracker.record([], send_id=send_id, lease=lease)  # still here
        stale += tracker.resolve_stale(send_id, lease.holder)
    return stale


Outcomes = list[tuple[int, str, str | None, str | None]]
STATE = operator.itemgetter(1)  # an outcome's state


def _deliver(
    tracker: Tracker,
    transport: Transport,
    compiled,
    send_id: int,
    by_key: _ListedContacts,
    secret: str,
    base: str,
    limit: int,
    waiter: Waiter,
    progress: Callable[[int], None],
    report: Report,
    lease: Lease | None = None,
) -> None:
    """Claim a batch before each request, keep up to the transport's `in_flight` requests
    awaiting their answers (BULLETIN_IN_FLIGHT for SendGrid; SMTP and the outbox: one), and
    record each batch's outcomes as they arrive, with the next claim (one commit). Requests
    run on threads; every database write happens here, on the calling thread."""
    slots = max(1, int(getattr(transport, "in_flight", 1)))
    answers: queue.Queue = queue.Queue()
    flying: dict[int, list] = {}
    unrecorded: Outcomes = []
    after = claimed_total = 0
    tickets = itertools.count()
    exhausted, stop = False, None
    builder = _Builder(transport, compiled, send_id, by_key, secret, base)
    try:
        while True:
            while len(flying) < slots and not exhausted and stop is None and not waiter.interrupted:
                size = min(transport.batch_size, limit - claimed_total)
                # Outcomes that arrived since are committed together with this claim.
                flight = _InFlight(flying)
                claimed = tracker.claim(
                    send_id, size, after, record=unrecorded, lease=lease, in_flight=flight
                )
                unrecorded = []
                if not claimed and after:  # rows below `after` that a stopped claimer put back
                    claimed = tracker.claim(send_id, size, 0, lease=lease, in_flight=flight)
                if not claimed:
                    exhausted = True
                    break
                after = claimed[-1].id
                claimed_total += len(claimed)
                exhausted = claimed_total >= limit
                ticket = next(tickets)
                flying[ticket] = claimed
                threading.Thread(
                    target=_request,
                    args=(builder, claimed, ticket, answers),
                    name=f"bulletin-request-{ticket}",
                    daemon=True,  # a second Ctrl-C abandons it: its rows become unknown
                ).start()
            if not flying:
                break
            if unrecorded:  # no claim to carry them: commit them now
                tracker.record(unrecorded, send_id=send_id, lease=lease)
                unrecorded = []
            ticket, outcomes, error = _next_answer(answers, tracker, send_id, lease)
            claimed = flying.pop(ticket)
            unrecorded += outcomes
            if error is not None:
                if not isinstance(error, Unsent):
                    raise error
                stop = stop or error  # no more requests; those in flight still answer
                continue
            report.attempted += len(claimed)
            accepted = operator.countOf(map(STATE, outcomes), State.ACCEPTED)  # no loop in Python
            report.accepted += accepted
            others = (
                [o for o in outcomes if o[1] != State.ACCEPTED] if accepted < len(outcomes) else []
            )
            emails = {row.id: row.email for row in claimed} if others else {}
            for delivery_id, state, _, message in others:
                if state == State.FAILED:
                    report.failed.append((emails[delivery_id], message or ""))
                elif state == State.UNKNOWN:
                    report.unknown.append(emails[delivery_id])
            progress(len(claimed))
    finally:
        if unrecorded:
            tracker.record(unrecorded, send_id=send_id, lease=lease)
    if stop is not None:
        raise stop


class _InFlight:
    """The row ids of the batches awaiting answers, as `claim(in_flight=…)` reads them: only
    when a lost connection makes it run again, so the set is built then, not every batch."""

    def __init__(self, flying: dict[int, list]) -> None:
        self.flying = flying
        self.ids: set[int] | None = None

    def __contains__(self, delivery_id: object) -> bool:
        if self.ids is None:
            self.ids = {row.id for rows in self.flying.values() for row in rows}
        return delivery_id in self.ids


def _next_answer(
    answers: queue.Queue, tracker: Tracker, send_id: int, lease: Lease | None
) -> tuple[int, Outcomes, BaseException | None]:
    """The next answered request; wakes often so Ctrl-C's handler runs on this thread, and
    renews the lease while every request waits (a long 429 back-off is not a dead sender)."""
    renewed = time.monotonic()
    while True:
        with suppress(queue.Empty):
            return answers.get(timeout=0.2)
        if lease is not None and time.monotonic() - renewed > lease.seconds / 3:
            tracker.record([], send_id=send_id, lease=lease)
            renewed = time.monotonic()


class _Builder:
    """Builds a claimed batch's request on its request thread, one batch at a time.

    Meanwhile the sending thread claims the next batch, waiting mostly on the database; four
    threads building at once spent as much time passing Python's lock (the GIL) between them
    as building (100,000 recipients: 3 s of 13)."""

    def __init__(self, transport: Transport, compiled, send_id: int, by_key, secret, base):
        self.transport, self.compiled, self.send_id = transport, compiled, send_id
        self.by_key, self.secret, self.base = by_key, secret, base
        self.lock = threading.Lock()

    def build(self, claimed: list) -> tuple[list[Outgoing], Outcomes, Callable[[], list]]:
        """(the batch's recipients, outcomes of its rows that cannot be sent, `send()`)."""
        transport, compiled = self.transport, self.compiled
        with self.lock:
            items, outcomes = _batch(
                compiled, self.send_id, claimed, self.by_key, self.secret, self.base
            )
            if not items:
                return items, outcomes, list
            prepare = getattr(transport, "prepare", None)  # SendGrid: builds its JSON now
            if prepare is None:
                return items, outcomes, partial(transport.send, compiled, items)
            return items, outcomes, prepare(compiled, items)


def _request(builder: _Builder, claimed: list, ticket: int, answers: queue.Queue) -> None:
    """One request, built and sent on its own thread: its outcomes (or why it stopped) go to
    `answers`.

    `Unsent`: nothing in the batch went but the recipients in `error.outcomes`; the rest are
    put back to pending, certainly not sent."""
    items: list[Outgoing] = []
    outcomes: Outcomes = []
    try:
        items, outcomes, send = builder.build(claimed)
        results = send()
    except Unsent as error:
        done = {o.delivery_id for o in error.outcomes}
        finished = [(o.delivery_id, o.state, o.message_id, o.error) for o in error.outcomes]
        unsent = [(i.delivery_id, State.PENDING, None, None) for i in items]
        answers.put((ticket, [u for u in unsent if u[0] not in done] + finished + outcomes, error))
        return
    except BaseException as error:  # a bug: reported on the sending thread; rows stay in doubt
        answers.put((ticket, outcomes, error))
        return
    answers.put(
        (
            ticket,
            outcomes + [(o.delivery_id, o.state, o.message_id, o.error) for o in results],
            None,
        )
    )


def _batch(
    compiled,
    send_id: int,
    claimed: list,
    by_key: _ListedContacts,
    secret: str,
    base: str,
) -> tuple[list[Outgoing], Outcomes]:
    """The messages of one claimed batch, and the outcomes of rows that cannot be sent."""
    items: list[Outgoing] = []
    outcomes: Outcomes = []
    unsubscribe_link = unsubscribe_link_maker(secret, base, send_id)
    feedback_link = _feedback_links(compiled, secret, base, send_id)
    send = str(send_id)
    for row in claimed:
        contact = _contact_for(row, by_key)
        if contact is None:
            outcomes.append(
                (row.id, State.FAILED, None, "no longer in the audience or the contact lists")
            )
            continue
        email = contact.email
        items.append(
            Outgoing(
                row.id,
                contact,
                unsubscribe_link(row.id, email),
                {"bulletin_send": send, "bulletin_delivery": str(row.id)},
                "",
                feedback_link(row.id, email) if feedback_link else "",
            )
        )
    return items, outcomes
