"""Data protection: `bulletin forget EMAIL` and `bulletin purge --older-than 400d` (issue 8).

`forget` erases one person from everything bulletin derived from the contact lists: their
delivery rows keep only the state (so a send's totals stay right) and lose the address, name,
ward and error text; their events keep only type and time; their .eml files in the outbox are
deleted. A suppression keyed by a hash of the address stays (with the address itself removed),
so no later send or import mails them again. Bulletin never edits the user's spreadsheets: it
lists the rows still naming the person, for the user to delete.

`purge` removes the per-recipient details (deliveries, events, outbox files) of sends older than
a cut-off and keeps each send's totals in `purged_sends`, so `bulletin status` still shows them.
A purged send can no longer be resumed (its recipients are unknown), so `send` refuses to resume
one rather than mail everyone again.

Both overwrite what they remove (SQLite's secure_delete) and empty the write-ahead log, so the
old values do not linger in the database files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bulletin.config import Settings
from bulletin.errors import InputError, Problem
from bulletin.ledger.keys import FORGET_REASON, FORGET_SOURCE, email_key

__all__ = ["FORGET_REASON", "FORGET_SOURCE"]
_AGE = re.compile(r"^\s*(\d+)\s*([dwy]?)\s*$", re.IGNORECASE)
_UNIT_DAYS = {"": 1, "d": 1, "w": 7, "y": 365}


@dataclass
class Forgotten:
    email: str
    deliveries: int = 0
    sends: int = 0
    events: int = 0
    newly_suppressed: bool = False
    outbox_files: int = 0
    contact_rows: list[Problem] = field(default_factory=list)
    wal_cleared: bool = True
    feedback: int = 0  # "Was this useful?" answers deleted (issue 18)
    keyed: bool = True  # the hash kept is keyed with BULLETIN_SECRET


@dataclass
class Purged:
    cutoff: datetime
    sends: list[int] = field(default_factory=list)
    deliveries: int = 0
    events: int = 0
    outbox_files: int = 0
    wal_cleared: bool = True
    comments: int = 0  # feedback comments blanked; the answers stay counted (issue 18)


def parse_age(text: str) -> timedelta:
    """`400d`, `8w`, `2y` or a bare number of days; ValueError if it is none of those."""
    match = _AGE.match(text or "")
    if not match:
        raise ValueError(f"{text!r}: write a number of days, weeks or years, such as 400d")
    days = int(match.group(1)) * _UNIT_DAYS[match.group(2).lower()]
    if days < 1:
        raise ValueError(f"{text!r}: must be at least one day")
    return timedelta(days=days)


def _delete_outbox_files(settings: Settings, names: Iterable[str]) -> int:
    folder = settings.resolve(settings.outbox)
    removed = 0
    for name in names:
        for path in folder.glob(name):
            with suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def _delete_outbox_naming(settings: Settings, key: str) -> int:
    """`send --test` copies and `.eml.tmp` files a killed send left, that name the address.

    Their names carry no delivery id of the person, so their content is read (issue 12).
    """
    folder = settings.resolve(settings.outbox)
    if not folder.is_dir():
        return 0
    needle = key.encode("utf-8", "replace")
    removed = 0
    for path in [*folder.glob("test-*.eml"), *folder.glob("*.eml.tmp")]:
        with suppress(OSError):
            if needle in path.read_bytes().lower():
                path.unlink()
                removed += 1
    return removed


def forget(settings: Settings, email: str) -> Forgotten:
    """Erase one person's contact-derived data; keep a hashed suppression. Safe to repeat."""
    from bulletin.send import send_lock

    if "@" not in email or not email.strip():
        raise InputError(f"{email!r} is not an email address; write e.g. name@example.org")
    from bulletin.ledger.feedback import FeedbackStore
    from bulletin.ledger.store import open_ledger

    key = email_key(email)
    result = Forgotten(email.strip())
    with (
        send_lock(settings.db_url),
        open_ledger(settings.db_url, timeout=settings.db_timeout, secret=settings.secret) as ledger,
    ):
        ledger.secure_delete()
        with ledger.transaction():  # the feedback goes with the rest of the erasure, or not at all
            counts = ledger.forget(email)
            result.feedback = FeedbackStore(ledger).forget_deliveries(counts.delivery_ids)
        result.deliveries, result.sends, result.events = (
            counts.deliveries,
            counts.sends,
            counts.events,
        )
        result.newly_suppressed = counts.newly_suppressed
        result.keyed = counts.keyed
        ids = counts.delivery_ids
        result.wal_cleared = ledger.clear_wal()
    result.outbox_files = _delete_outbox_files(
        settings, (f"*-{delivery_id:07d}.eml" for delivery_id in ids)
    )
    result.outbox_files += _delete_outbox_naming(settings, key)
    result.contact_rows = _rows_naming(settings, key)
    return result


def _rows_naming(settings: Settings, key: str) -> list[Problem]:
    """Where the contact lists (contacts/*.csv and those messages name) still hold the address."""
    from bulletin import contacts
    from bulletin.message import DEFAULT_CONTACTS, load_message

    patterns = list(DEFAULT_CONTACTS)
    for path in sorted((settings.workdir / "messages").glob("*.md")):
        with suppress(InputError):
            message, _problems = load_message(path, settings.workdir)
            if message is not None:
                patterns += [p for p in message.contacts if p not in patterns]
    files, _missing = contacts.expand(patterns, settings.workdir)
    loaded = contacts.load_contacts(files, settings.workdir)
    found = [Problem(c.file, c.line, "") for c in loaded.contacts if c.email.lower() == key]
    found += [
        Problem(p.file, p.line, "")
        for p in loaded.duplicates
        if p.text.lower().startswith(key + " ")
    ]
    return found


def purge(
    settings: Settings, older_than: timedelta, *, now: datetime | None = None, dry_run: bool = False
) -> Purged:
    """Remove per-recipient details of sends created before now - older_than; keep totals."""
    from bulletin.send import send_lock

    cutoff = (now or datetime.now(UTC)) - older_than
    result = Purged(cutoff)
    if not settings.db_exists:
        return result
    from bulletin.ledger.feedback import FeedbackStore
    from bulletin.ledger.store import open_ledger

    with (
        send_lock(settings.db_url),
        open_ledger(settings.db_url, timeout=settings.db_timeout) as ledger,
    ):
        ledger.secure_delete()
        stamp = cutoff.astimezone(UTC).isoformat(timespec="seconds")
        with ledger.transaction(write=not dry_run):  # comments blanked with the rows, or neither
            counts = ledger.purge(cutoff, dry_run=dry_run)
            result.comments = FeedbackStore(ledger).purge_comments(
                stamp, counts.sends, dry_run=dry_run
            )
        result.sends, result.deliveries, result.events = (
            counts.sends,
            counts.deliveries,
            counts.events,
        )
        if dry_run:
            return result
        result.wal_cleared = ledger.clear_wal()
    result.outbox_files = _delete_outbox_files(settings, (f"{i}-*.eml" for i in result.sends))
    return result


def describe_forgotten(result: Forgotten) -> list[str]:
    """What `forget` did, as lines for the user."""
    lines = [
        f"Forgot {result.email}: {result.deliveries} delivery record(s) in {result.sends} "
        f"send(s), {result.events} event(s), {result.outbox_files} outbox file(s). "
        + (
            "Kept a suppression (a hash of the address only), so no later send mails them."
            if result.newly_suppressed
            else "They were already suppressed; the suppression now keeps only a hash."
        )
    ]
    if not result.keyed:
        lines.append(
            "Note: BULLETIN_SECRET is not set, so the hash kept is a plain SHA-256 of the "
            "address, which anyone who guesses the address can match; set it and forget again."
        )
    if result.feedback:
        lines.append(f"Deleted their {result.feedback} feedback answer(s) and comment(s).")
    if not result.wal_cleared:
        lines.append(
            "Note: another bulletin process has the database open; old copies stay in its "
            "write-ahead log until it stops. Run the same command again afterwards."
        )
    return lines


def describe_purged(result: Purged, dry_run: bool) -> str:
    day = f"{result.cutoff.astimezone(UTC):%Y-%m-%d}"
    if not result.sends:
        return f"Nothing to purge: no send was made before {day}."
    verb = "Would purge" if dry_run else "Purged"
    return (
        f"{verb} {len(result.sends)} send(s) made before {day} "
        f"(#{', #'.join(map(str, result.sends))}): {result.deliveries:,} delivery record(s), "
        f"{result.events:,} event(s)"
        + ("" if dry_run else f", {result.outbox_files} outbox file(s)")
        + (f", {result.comments} feedback comment(s)" if result.comments else "")
        + "; their totals stay in bulletin status."
    )
