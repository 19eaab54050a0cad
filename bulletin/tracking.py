"""The tracking database: sends, one delivery row per recipient, events and suppressions.

SQLite in WAL mode, created readable by its owner only. The schema is versioned with
`PRAGMA user_version`: `MIGRATIONS[n]` takes a database from version n to n + 1, so later
changes append a migration and never edit an old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from bulletin.errors import BulletinError, ExitCode, InputError


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed; the request may be in flight
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    BLOCKED = "blocked"
    SPAMREPORT = "spamreport"
    UNSUBSCRIBED = "unsubscribed"
    FAILED = "failed"  # rejected by the transport
    UNKNOWN = "unknown"  # the process died or the answer was lost mid-request


# Per-recipient terminal outcomes: none of these is ever sent again by a resumed send.
FINAL_STATES = frozenset(State) - {State.PENDING, State.SENDING}

MIGRATIONS: list[str] = [
    # 0 → 1
    """
    CREATE TABLE sends (
        id INTEGER PRIMARY KEY,
        message TEXT NOT NULL,
        path TEXT NOT NULL,
        subject TEXT NOT NULL,
        reference TEXT NOT NULL DEFAULT '',
        category TEXT NOT NULL DEFAULT '',
        content_hash TEXT NOT NULL,
        transport TEXT NOT NULL,
        created_at TEXT NOT NULL,
        completed_at TEXT
    );
    CREATE INDEX sends_message ON sends(message, id);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        send_id INTEGER NOT NULL REFERENCES sends(id),
        email TEXT NOT NULL,
        email_key TEXT NOT NULL,
        first_name TEXT NOT NULL DEFAULT '',
        last_name TEXT NOT NULL DEFAULT '',
        ward TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'pending',
        message_id TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        opened INTEGER NOT NULL DEFAULT 0,
        clicked INTEGER NOT NULL DEFAULT 0,
        first_opened_at TEXT,
        last_opened_at TEXT,
        first_clicked_at TEXT,
        last_clicked_at TEXT,
        UNIQUE (send_id, email_key)
    );
    CREATE INDEX deliveries_state ON deliveries(send_id, state);
    CREATE INDEX deliveries_message_id ON deliveries(message_id);
    CREATE INDEX deliveries_email ON deliveries(email_key);
    CREATE TABLE suppressions (
        email_hash TEXT PRIMARY KEY,
        email TEXT,
        reason TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'manual',
        created_at TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        sg_event_id TEXT UNIQUE,
        delivery_id INTEGER REFERENCES deliveries(id),
        event TEXT NOT NULL,
        email TEXT,
        timestamp INTEGER,
        reason TEXT,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE INDEX events_delivery ON events(delivery_id);
    """,
    # 1 → 2: `bulletin purge` keeps a send's totals after deleting its rows (issue 8)
    """
    CREATE TABLE purged_sends (
        send_id INTEGER PRIMARY KEY REFERENCES sends(id),
        purged_at TEXT NOT NULL,
        counts TEXT NOT NULL
    );
    """,
    # 2 → 3: which of SendGrid's open / click tracking a send asked for (issue 19); NULL: not
    # recorded (an older send, or a transport that tracks nothing)
    """
    ALTER TABLE sends ADD COLUMN open_tracking INTEGER;
    ALTER TABLE sends ADD COLUMN click_tracking INTEGER;
    """,
    # 3 → 4: "Was this useful?" answers, one per delivery (issue 18; bulletin/ledger_feedback.py).
    # delivery_id becomes NULL when `purge` deletes the delivery: the answer still counts.
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        send_id INTEGER NOT NULL REFERENCES sends(id),
        delivery_id INTEGER UNIQUE REFERENCES deliveries(id) ON DELETE SET NULL,
        answer TEXT NOT NULL CHECK (answer IN ('useful', 'not_useful', 'concern')),
        comment TEXT NOT NULL DEFAULT '',
        answered_at TEXT NOT NULL,
        commented_at TEXT
    );
    CREATE INDEX feedback_send ON feedback(send_id, answer);
    """,
    # 4 → 5: sign-off before send (issue 17). One row per request, approval or "ask for
    # changes" of one version (fingerprint) of a message; a link's decision names its request,
    # once (UNIQUE: a link cannot be used twice). Sends record the version and approvals they
    # went out under. All SQL on these tables is in bulletin/ledger_approvals.py.
    """
    CREATE TABLE approval_events (
        id INTEGER PRIMARY KEY,
        message TEXT NOT NULL,
        path TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        kind TEXT NOT NULL,
        approver TEXT NOT NULL,
        approver_name TEXT NOT NULL DEFAULT '',
        route TEXT NOT NULL,
        request_id INTEGER UNIQUE REFERENCES approval_events(id),
        comment TEXT NOT NULL DEFAULT '',
        audience INTEGER NOT NULL,
        audience_definition TEXT NOT NULL,
        text TEXT NOT NULL,
        expires_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX approval_events_message ON approval_events(message, fingerprint, id);
    CREATE TABLE send_versions (
        send_id INTEGER NOT NULL REFERENCES sends(id),
        fingerprint TEXT NOT NULL,
        audience INTEGER NOT NULL,
        after_event INTEGER NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (send_id, fingerprint)
    );
    CREATE TABLE send_approvals (
        send_id INTEGER NOT NULL REFERENCES sends(id),
        approval_id INTEGER NOT NULL REFERENCES approval_events(id),
        PRIMARY KEY (send_id, approval_id)
    );
    """,
    # 5 → 6: public pages of sent messages (issue 21; SQL in bulletin/ledger_publish.py). The
    # message file's bytes as each send began, so a page shows what was sent, not a later edit;
    # and one page per reference, pointing at the send it shows, withdrawn or not.
    """
    CREATE TABLE sent_sources (
        content_hash TEXT PRIMARY KEY,
        message TEXT NOT NULL,
        source BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE publications (
        reference TEXT PRIMARY KEY,
        message TEXT NOT NULL,
        send_id INTEGER NOT NULL REFERENCES sends(id),
        content_hash TEXT NOT NULL,
        published_at TEXT NOT NULL,
        withdrawn_at TEXT
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def email_hash(email: str) -> str:
    """Suppressions are keyed by a hash so `forget` can drop the address and keep the block."""
    return hashlib.sha256(email_key(email).encode()).hexdigest()


def email_key(email: str) -> str:
    """An address as contacts store it: lower case, an international domain in ASCII (xn--…)."""
    key = email.strip().lower()
    local, at, domain = key.rpartition("@")
    if at and not domain.isascii():
        import idna

        with suppress(idna.IDNAError, UnicodeError):
            key = f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    return key


def purged_text(send_id: int) -> str:
    return (
        f"send #{send_id} was purged: who received it is no longer recorded, so it "
        "cannot be resumed without mailing everyone again; pass --new-send to do that"
    )


class DatabaseError(BulletinError):
    exit_code = ExitCode.TRANSPORT


def explain(error: sqlite3.Error, path: Path) -> DatabaseError:
    """A SQLite failure as one sentence saying what to do."""
    text = str(error)
    if "locked" in text or "busy" in text:
        hint = "another process holds it locked; wait for it to finish and try again"
    elif "readonly" in text:
        hint = "it is read-only; check the file's permissions (BULLETIN_DB)"
    elif "disk is full" in text or "full" in text or _disk_nearly_full(path):
        hint = "the disk is full; free some space and run the same command again"
    elif "malformed" in text or "not a database" in text:
        hint = "it is damaged or not a bulletin database; restore it from a backup"
    elif "unable to open" in text:
        hint = "it cannot be opened; check BULLETIN_DB and the folder's permissions"
    elif "disk I/O error" in text:
        hint = (
            "writing it failed (disk I/O error); check that the disk has free space and is "
            "writable, then run the same command again"
        )
    else:
        hint = text
    return DatabaseError(f"tracking database {path}: {hint}")


def _disk_nearly_full(path: Path) -> bool:
    """SQLite reports some out-of-space failures (its WAL index) only as "disk I/O error"."""
    try:
        return shutil.disk_usage(path.parent).free < 1024 * 1024
    except OSError:
        return False


@dataclass(frozen=True)
class SendRow:
    id: int
    message: str
    path: str
    subject: str
    reference: str
    category: str
    content_hash: str
    transport: str
    created_at: str
    completed_at: str | None
    open_tracking: int | None = None
    click_tracking: int | None = None


@dataclass(frozen=True)
class Claimed:
    id: int
    email: str
    email_key: str


class Tracker:
    """All reads and writes of the tracking database."""

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = path
        try:
            _create_private(path)
            self.db = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as error:
            raise explain(error, path) from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"tracking database {self.path} was written by a newer bulletin "
                f"(schema {version}); upgrade bulletin"
            )
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                for statement in _statements(MIGRATIONS[number]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: takes the write lock up front, so claims are atomic."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise explain(error, self.path) from None
        try:
            yield self.db
        except BaseException as error:
            self._rollback()
            if isinstance(error, sqlite3.Error):  # e.g. read-only or full mid-way (issue 8)
                raise explain(error, self.path) from None
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as error:
            self._rollback()
            raise explain(error, self.path) from None

    def _rollback(self) -> None:
        """Roll back if SQLite has not already done so itself (it may, on a full disk)."""
        if self.db.in_transaction:
            with suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")

    def execute(self, sql: str, params: Sequence = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as error:
            raise explain(error, self.path) from None

    # --- sends ---------------------------------------------------------------------------

    def latest_send(self, message: str) -> SendRow | None:
        row = self.execute(
            "SELECT * FROM sends WHERE message = ? ORDER BY id DESC LIMIT 1", (message,)
        ).fetchone()
        return SendRow(**dict(row)) if row else None

    def get_send(self, send_id: int) -> SendRow | None:
        row = self.execute("SELECT * FROM sends WHERE id = ?", (send_id,)).fetchone()
        return SendRow(**dict(row)) if row else None

    def sends(self) -> list[SendRow]:
        return [SendRow(**dict(r)) for r in self.execute("SELECT * FROM sends ORDER BY id")]

    def create_send(
        self,
        *,
        message: str,
        path: str,
        subject: str,
        reference: str,
        category: str,
        content_hash: str,
        transport: str,
    ) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO sends (message, path, subject, reference, category, content_hash,"
                " transport, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (message, path, subject, reference, category, content_hash, transport, utcnow()),
            )
            return int(cursor.lastrowid)

    def note_tracking(self, send_id: int, *, opens: bool, clicks: bool) -> None:
        """Record the tracking a run of this send asked for; on for any run stays on."""
        with self.transaction() as db:
            db.execute(
                "UPDATE sends SET open_tracking = MAX(COALESCE(open_tracking, 0), ?), "
                "click_tracking = MAX(COALESCE(click_tracking, 0), ?) WHERE id = ?",
                (int(opens), int(clicks), send_id),
            )

    def complete_if_done(self, send_id: int) -> bool:
        """Mark the send completed once no recipient is pending or in flight."""
        with self.transaction() as db:
            open_ = db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE send_id = ? AND state IN "
                "('pending', 'sending')",
                (send_id,),
            ).fetchone()[0]
            if open_ == 0:
                db.execute(
                    "UPDATE sends SET completed_at = COALESCE(completed_at, ?) WHERE id = ?",
                    (utcnow(), send_id),
                )
            return open_ == 0

    # --- deliveries ----------------------------------------------------------------------

    def add_recipients(self, send_id: int, contacts: Iterable) -> int:
        """Insert the audience as pending; recipients already recorded are left as they are."""
        if self.is_purged(send_id):
            raise InputError(purged_text(send_id))
        now = utcnow()
        rows = (
            (send_id, c.email, c.email.lower(), c.first_name, c.last_name, c.get("ward"), now, now)
            for c in contacts
        )
        with self.transaction() as db:
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO deliveries (send_id, email, email_key, first_name,"
                " last_name, ward, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return db.total_changes - before

    def stale_to_unknown(self, send_id: int) -> list[str]:
        """Recipients left `sending` by a crashed run: their fate is unknown. Call under lock."""
        with self.transaction() as db:
            emails = [
                r[0]
                for r in db.execute(
                    "SELECT email FROM deliveries WHERE send_id = ? AND state = 'sending'",
                    (send_id,),
                )
            ]
            db.execute(
                "UPDATE deliveries SET state = 'unknown', updated_at = ?, error = "
                "'the sending process stopped before the transport answered' "
                "WHERE send_id = ? AND state = 'sending'",
                (utcnow(), send_id),
            )
        return emails

    def unknown_to_pending(self, send_id: int, keys: set[str] | None = None) -> int:
        """`--resend-unknown`: unknown recipients (only those in `keys`, if given) go again."""
        with self.transaction() as db:
            rows = db.execute(
                "SELECT id, email_key FROM deliveries WHERE send_id = ? AND state = 'unknown'",
                (send_id,),
            ).fetchall()
            now = utcnow()
            ids = [(now, r["id"]) for r in rows if keys is None or r["email_key"] in keys]
            db.executemany(
                "UPDATE deliveries SET state = 'pending', updated_at = ? "
                "WHERE id = ? AND state = 'unknown'",
                ids,
            )
            return len(ids)

    def remove_left(self, send_id: int, keys: set[str]) -> int:
        """Delete the pending rows of people no longer in the audience (`keys`): never sent.

        A pending row records nothing that happened, only an intention; the person left the
        list before their turn came, so the send no longer owes them a copy (issue 11). If they
        come back, a later resume adds them again.
        """
        with self.transaction() as db:
            rows = db.execute(
                "SELECT id, email_key FROM deliveries WHERE send_id = ? AND state = 'pending'",
                (send_id,),
            ).fetchall()
            gone = [(r["id"],) for r in rows if r["email_key"] not in keys]
            # A stray event matched by address pins a row (events.delivery_id): keep it, dropped.
            db.executemany(
                "UPDATE deliveries SET state = 'dropped', error = 'left the audience; not sent' "
                "WHERE id = ? AND EXISTS (SELECT 1 FROM events WHERE delivery_id = deliveries.id)",
                gone,
            )
            db.executemany("DELETE FROM deliveries WHERE id = ? AND state = 'pending'", gone)
            return len(gone)

    def recipient_states(self, send_id: int) -> dict[str, str]:
        """email key → state, for every recipient row of a send: the ledger a resume reads."""
        return dict(
            self.execute(
                "SELECT email_key, state FROM deliveries WHERE send_id = ?", (send_id,)
            ).fetchall()
        )

    def is_purged(self, send_id: int) -> bool:
        row = self.execute("SELECT 1 FROM purged_sends WHERE send_id = ?", (send_id,))
        return row.fetchone() is not None

    def drop_suppressed(self, send_id: int) -> int:
        """Pending recipients who have since been suppressed are dropped, never sent."""
        with self.transaction() as db:
            hashes = {
                r["email_hash"]: r["reason"]
                for r in db.execute("SELECT email_hash, reason FROM suppressions")
            }
            if not hashes:
                return 0
            pending = db.execute(
                "SELECT id, email_key FROM deliveries WHERE send_id = ? AND state = 'pending'",
                (send_id,),
            ).fetchall()
            now = utcnow()
            rows = [
                (f"suppressed: {hashes[email_hash(r['email_key'])]}", now, r["id"])
                for r in pending
                if email_hash(r["email_key"]) in hashes
            ]
            db.executemany(
                "UPDATE deliveries SET state = 'dropped', error = ?, updated_at = ? WHERE id = ?",
                rows,
            )
            return len(rows)

    def claim(
        self,
        send_id: int,
        limit: int,
        after: int = 0,
        record: Iterable[tuple[int, str, str | None, str | None]] = (),
    ) -> list[Claimed]:
        """Atomically move up to `limit` pending recipients (ids above `after`) to `sending`.

        `record` writes the previous batch's outcomes in the same transaction, so a send
        costs one durable commit per batch rather than two (SMTP's batches are one message).
        """
        with self.transaction() as db:
            self._record(db, record)
            rows = db.execute(
                "SELECT id, email, email_key FROM deliveries WHERE send_id = ? "
                "AND state = 'pending' AND id > ? ORDER BY id LIMIT ?",
                (send_id, after, limit),
            ).fetchall()
            now = utcnow()
            db.executemany(
                "UPDATE deliveries SET state = 'sending', updated_at = ? WHERE id = ?",
                [(now, r["id"]) for r in rows],
            )
        return [Claimed(r["id"], r["email"], r["email_key"]) for r in rows]

    def record(self, outcomes: Iterable[tuple[int, str, str | None, str | None]]) -> None:
        """Write (delivery id, state, message id, error) outcomes from the transport."""
        with self.transaction() as db:
            self._record(db, outcomes)

    @staticmethod
    def _record(
        db: sqlite3.Connection, outcomes: Iterable[tuple[int, str, str | None, str | None]]
    ) -> None:
        now = utcnow()
        db.executemany(
            "UPDATE deliveries SET state = ?, message_id = COALESCE(?, message_id), "
            "error = ?, updated_at = ? WHERE id = ? AND state = 'sending'",
            [
                (state, message_id, error, now, delivery_id)
                for delivery_id, state, message_id, error in outcomes
            ],
        )

    def counts(self, send_id: int) -> dict[str, int]:
        counts = {state.value: 0 for state in State}
        purged = self.execute(
            "SELECT counts FROM purged_sends WHERE send_id = ?", (send_id,)
        ).fetchone()
        if purged is not None:  # its rows are gone; `bulletin purge` kept the totals
            return {**counts, "opened": 0, "clicked": 0, **json.loads(purged[0])}
        for row in self.execute(
            "SELECT state, COUNT(*) FROM deliveries WHERE send_id = ? GROUP BY state", (send_id,)
        ):
            counts[row[0]] = row[1]
        flags = self.execute(
            "SELECT COALESCE(SUM(opened), 0), COALESCE(SUM(clicked), 0) "
            "FROM deliveries WHERE send_id = ?",
            (send_id,),
        ).fetchone()
        counts["opened"], counts["clicked"] = flags[0], flags[1]
        return counts

    def emails_in_state(self, send_id: int, state: State) -> list[str]:
        return [
            r[0]
            for r in self.execute(
                "SELECT email FROM deliveries WHERE send_id = ? AND state = ? ORDER BY id",
                (send_id, state.value),
            )
        ]

    def delivery_rows(self, send_id: int) -> Iterator[sqlite3.Row]:
        yield from self.execute(
            "SELECT * FROM deliveries WHERE send_id = ? ORDER BY id", (send_id,)
        )

    # --- suppressions --------------------------------------------------------------------

    def suppressed_hashes(self) -> set[str]:
        return {r[0] for r in self.execute("SELECT email_hash FROM suppressions")}

    def suppress(self, email: str, reason: str, source: str = "manual") -> bool:
        """Add an address to the do-not-send list; False if it was already there."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO suppressions (email_hash, email, reason, source,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                (email_hash(email), email.strip(), reason, source, utcnow()),
            )
            return cursor.rowcount == 1

    def unsuppress(self, email: str) -> bool:
        with self.transaction() as db:
            return (
                db.execute(
                    "DELETE FROM suppressions WHERE email_hash = ?", (email_hash(email),)
                ).rowcount
                == 1
            )

    def suppressions(self) -> list[sqlite3.Row]:
        return self.execute("SELECT * FROM suppressions ORDER BY created_at, email").fetchall()

    # --- delivery events (issue 5) -------------------------------------------------------
    # The batch helpers below run inside a caller's `transaction()`: bulletin/events.py reads
    # the current state and writes the outcome of a whole batch in one short transaction.

    def get_delivery(self, delivery_id: int) -> sqlite3.Row | None:
        return self.execute("SELECT * FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()

    def deliveries_by_id(self, ids: Iterable[int]) -> list[sqlite3.Row]:
        return _select_in(
            self.db, "SELECT id, send_id, email, email_key, state FROM deliveries WHERE id IN", ids
        )

    def deliveries_by_message_id(self, message_ids: Iterable[str]) -> list[sqlite3.Row]:
        return _select_in(
            self.db,
            "SELECT id, send_id, email, email_key, state, message_id FROM deliveries "
            "WHERE message_id IN",
            message_ids,
        )

    def deliveries_by_email(self, email_keys: Iterable[str]) -> list[sqlite3.Row]:
        return _select_in(
            self.db,
            "SELECT id, send_id, email, email_key, state, message_id FROM deliveries "
            "WHERE email_key IN",
            email_keys,
        )

    def known_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        rows = _select_in(self.db, "SELECT sg_event_id FROM events WHERE sg_event_id IN", event_ids)
        return {r[0] for r in rows}

    def insert_events(self, rows: Iterable[tuple]) -> None:
        """(sg_event_id, delivery_id, event, email, timestamp, reason, payload, received_at)."""
        self.db.executemany(
            "INSERT OR IGNORE INTO events (sg_event_id, delivery_id, event, email, timestamp,"
            " reason, payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def set_states(self, rows: Iterable[tuple[str, str | None, str, int]]) -> None:
        """(state, error, updated_at, delivery id); the caller has decided precedence."""
        self.db.executemany(
            "UPDATE deliveries SET state = ?, error = ?, updated_at = ? WHERE id = ?", rows
        )

    def mark_engagement(self, kind: str, rows: Iterable[tuple[str, str, int]]) -> None:
        """Set the opened/clicked flag and widen first/last times: (first, last, delivery id)."""
        column = {"open": "opened", "click": "clicked"}[kind]
        self.db.executemany(
            f"UPDATE deliveries SET {column} = 1, "
            f"first_{column}_at = CASE WHEN first_{column}_at IS NULL OR first_{column}_at > ?1 "
            f"THEN ?1 ELSE first_{column}_at END, "
            f"last_{column}_at = CASE WHEN last_{column}_at IS NULL OR last_{column}_at < ?2 "
            f"THEN ?2 ELSE last_{column}_at END WHERE id = ?3",
            rows,
        )

    def suppress_many(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """(email, reason, source) onto the do-not-send list; returns how many were new."""
        now = utcnow()
        before = self.db.total_changes
        self.db.executemany(
            "INSERT OR IGNORE INTO suppressions (email_hash, email, reason, source, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(email_hash(e), e.strip(), reason, source, now) for e, reason, source in rows],
        )
        return self.db.total_changes - before

    def is_suppressed(self, email: str) -> bool:
        row = self.execute(
            "SELECT 1 FROM suppressions WHERE email_hash = ?", (email_hash(email),)
        ).fetchone()
        return row is not None

    def first_event_times(self, send_id: int) -> list[sqlite3.Row]:
        """Per delivery of a send and event type, the earliest event timestamp."""
        return self.execute(
            "SELECT e.delivery_id, e.event, MIN(e.timestamp) AS timestamp FROM events e "
            "JOIN deliveries d ON d.id = e.delivery_id WHERE d.send_id = ? "
            "AND e.timestamp IS NOT NULL GROUP BY e.delivery_id, e.event",
            (send_id,),
        ).fetchall()

    def ward_counts(self, send_id: int) -> list[sqlite3.Row]:
        return self.execute(
            "SELECT ward, COUNT(*) AS recipients, SUM(state NOT IN ('pending', 'sending', "
            "'failed', 'unknown')) AS sent, "
            "SUM(state IN ('delivered', 'spamreport', 'unsubscribed')) AS delivered, "
            "SUM(state IN ('bounced', 'dropped', 'blocked')) AS bounced, "
            "SUM(state IN ('spamreport', 'unsubscribed')) AS unsubscribed, "
            "SUM(opened) AS opened, SUM(clicked) AS clicked "
            "FROM deliveries WHERE send_id = ? GROUP BY ward ORDER BY ward",
            (send_id,),
        ).fetchall()

    def failure_rows(self, send_id: int) -> list[sqlite3.Row]:
        return self.execute(
            "SELECT state, error FROM deliveries WHERE send_id = ? "
            "AND state IN ('bounced', 'dropped', 'blocked', 'failed')",
            (send_id,),
        ).fetchall()


def _select_in(
    db: sqlite3.Connection, head: str, values: Iterable, tail: str = "", size: int = 500
) -> list[sqlite3.Row]:
    """`head (?, ?, …) tail` over `values` in chunks that stay under SQLite's variable limit."""
    values = list(dict.fromkeys(values))
    rows: list[sqlite3.Row] = []
    for start in range(0, len(values), size):
        chunk = values[start : start + size]
        marks = ", ".join("?" * len(chunk))
        rows += db.execute(f"{head} ({marks}) {tail}", chunk).fetchall()
    return rows


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite copies its mode to -wal/-shm)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)
