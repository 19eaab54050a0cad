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

import json
import re
import sqlite3
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bulletin.config import Settings
from bulletin.errors import InputError, Problem
from bulletin.ledger_feedback import FeedbackStore
from bulletin.tracking import Tracker, email_hash, email_key, utcnow

FORGET_REASON = "forgotten (data-protection request)"
FORGET_SOURCE = "forget"
# Columns of `deliveries` that came from a contact list (a later migration may add more).
PERSONAL_COLUMNS = {
    "email": "''",
    "first_name": "''",
    "last_name": "''",
    "ward": "''",
    "error": "NULL",
    "fields": "NULL",
    "name": "''",
}
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


def _secure(tracker: Tracker) -> None:
    """Overwrite deleted and replaced content with zeros instead of leaving it in free pages."""
    tracker.execute("PRAGMA secure_delete = ON")


def _clear_wal(tracker: Tracker) -> bool:
    """Copy the WAL into the database and empty it; False if a reader kept old pages in it."""
    try:
        busy, _log, _done = tracker.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error:
        return False
    return busy == 0


def _delete_outbox_files(settings: Settings, names: Iterable[str]) -> int:
    folder = settings.resolve(settings.outbox)
    removed = 0
    for name in names:
        for path in folder.glob(name):
            with suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def _scrub_reasons(db: sqlite3.Connection, key: str, digest: str) -> None:
    """Suppression reasons may quote the address (a bounce's SMTP text names it, issue 12)."""
    named = re.compile(re.escape(key), re.IGNORECASE)
    rows = db.execute(
        "SELECT email_hash, reason FROM suppressions"
        " WHERE email_hash = ? OR instr(lower(reason), ?)",
        (digest, key),
    ).fetchall()
    for row in rows:
        reason = named.sub("(address removed)", row["reason"])
        if row["email_hash"] == digest and ":" in reason:  # "hard bounce: 550 … <address>"
            reason = reason.split(":", 1)[0]
        db.execute(
            "UPDATE suppressions SET reason = ? WHERE email_hash = ?", (reason, row["email_hash"])
        )


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


def _in_clause(ids: list[int]) -> str:
    return "(" + ",".join(str(int(i)) for i in ids) + ")"


def forget(settings: Settings, email: str) -> Forgotten:
    """Erase one person's contact-derived data; keep a hashed suppression. Safe to repeat."""
    from bulletin.send import send_lock

    if "@" not in email or not email.strip():
        raise InputError(f"{email!r} is not an email address; write e.g. name@example.org")
    key, digest = email_key(email), email_hash(email)
    result = Forgotten(email.strip())
    with (
        send_lock(settings.db_path),
        Tracker(settings.db_path, timeout=settings.db_timeout) as tracker,
    ):
        _secure(tracker)
        columns = {r["name"] for r in tracker.execute("PRAGMA table_info(deliveries)")}
        blank = ", ".join(f"{c} = {v}" for c, v in PERSONAL_COLUMNS.items() if c in columns)
        with tracker.transaction() as db:
            rows = db.execute(
                "SELECT id, send_id FROM deliveries WHERE email_key = ?", (key,)
            ).fetchall()
            ids = [r["id"] for r in rows]
            result.deliveries, result.sends = len(ids), len({r["send_id"] for r in rows})
            where = "lower(email) = ?" + (f" OR delivery_id IN {_in_clause(ids)}" if ids else "")
            result.events = db.execute(
                f"UPDATE events SET email = NULL, reason = NULL, payload = '{{}}' WHERE {where}",
                (key,),
            ).rowcount
            result.feedback = FeedbackStore(tracker).forget_deliveries(ids)
            if ids:
                db.execute(
                    f"UPDATE deliveries SET {blank}, email_key = 'forgotten:' || id "
                    f"WHERE id IN {_in_clause(ids)}"
                )
            result.newly_suppressed = (
                db.execute(
                    "INSERT OR IGNORE INTO suppressions (email_hash, email, reason, source,"
                    " created_at) VALUES (?, NULL, ?, ?, ?)",
                    (digest, FORGET_REASON, FORGET_SOURCE, utcnow()),
                ).rowcount
                == 1
            )
            db.execute("UPDATE suppressions SET email = NULL WHERE email_hash = ?", (digest,))
            _scrub_reasons(db, key, digest)
        result.wal_cleared = _clear_wal(tracker)
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
    if not settings.db_path.exists():
        return result
    with (
        send_lock(settings.db_path),
        Tracker(settings.db_path, timeout=settings.db_timeout) as tracker,
    ):
        _secure(tracker)
        purged = {r[0] for r in tracker.execute("SELECT send_id FROM purged_sends")}
        old = [
            s
            for s in tracker.sends()
            if s.id not in purged and datetime.fromisoformat(s.created_at) < cutoff
        ]
        result.sends = [s.id for s in old]
        within = f"(SELECT id FROM deliveries WHERE send_id IN {_in_clause(result.sends)})"
        stamp = cutoff.astimezone(UTC).isoformat(timespec="seconds")
        orphans = "delivery_id IS NULL AND received_at < ?"
        if dry_run:
            if old:
                result.deliveries = tracker.execute(
                    f"SELECT COUNT(*) FROM deliveries WHERE send_id IN {_in_clause(result.sends)}"
                ).fetchone()[0]
                result.events = tracker.execute(
                    f"SELECT COUNT(*) FROM events WHERE delivery_id IN {within}"
                ).fetchone()[0]
            result.events += tracker.execute(
                f"SELECT COUNT(*) FROM events WHERE {orphans}", (stamp,)
            ).fetchone()[0]
            result.comments = FeedbackStore(tracker).purge_comments(
                stamp, result.sends, dry_run=True
            )
            return result
        with tracker.transaction() as db:
            for send in old:
                counts = tracker.counts(send.id)
                db.execute(
                    "INSERT INTO purged_sends (send_id, purged_at, counts) VALUES (?, ?, ?)",
                    (send.id, utcnow(), json.dumps(counts, sort_keys=True)),
                )
            if old:
                result.events = db.execute(
                    f"DELETE FROM events WHERE delivery_id IN {within}"
                ).rowcount
                result.deliveries = db.execute(
                    f"DELETE FROM deliveries WHERE send_id IN {_in_clause(result.sends)}"
                ).rowcount
            result.events += db.execute(f"DELETE FROM events WHERE {orphans}", (stamp,)).rowcount
            result.comments = FeedbackStore(tracker).purge_comments(stamp, result.sends)
        result.wal_cleared = _clear_wal(tracker)
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
