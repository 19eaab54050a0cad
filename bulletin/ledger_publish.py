"""The public pages' storage (issue 21): every statement about them, in one class.

Two tables (tracking.py, migration 3 → 4): `sent_sources` keeps the message file's bytes as
each send began, keyed by the content hash the send recorded, so a page always shows what
was sent; `publications` has one row per reference, naming the send whose content it shows
and whether (when) it was withdrawn. Opening a page only reads.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bulletin.tracking import explain, utcnow


@dataclass(frozen=True)
class Publication:
    reference: str
    message: str  # the message's name
    send_id: int
    content_hash: str
    sent_at: str  # the send's created_at (UTC, ISO 8601)
    published_at: str
    withdrawn_at: str | None

    @property
    def withdrawn(self) -> bool:
        return self.withdrawn_at is not None


class PublicationStore:
    """Reads and writes of `sent_sources` and `publications`, from a Tracker's connection."""

    def __init__(self, db: sqlite3.Connection, path: Path | None = None) -> None:
        self.db, self.path = db, path or Path("bulletin.db")

    def _execute(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as error:
            raise explain(error, self.path) from None

    def keep_source(self, content_hash: str, message: str, source: bytes) -> None:
        """Keep the bytes of a sent version (once: the same hash is the same bytes)."""
        self._execute(
            "INSERT OR IGNORE INTO sent_sources (content_hash, message, source, created_at) "
            "VALUES (?, ?, ?, ?)",
            (content_hash, message, source, utcnow()),
        )

    def source(self, content_hash: str) -> bytes | None:
        row = self._execute(
            "SELECT source FROM sent_sources WHERE content_hash = ?", (content_hash,)
        ).fetchone()
        return bytes(row[0]) if row else None

    def publish(self, reference: str, message: str, send_id: int, content_hash: str) -> None:
        """The page for `reference` shows this send's content from now on (again, if withdrawn)."""
        self._execute(
            "INSERT INTO publications (reference, message, send_id, content_hash, published_at, "
            "withdrawn_at) VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT (reference) DO UPDATE SET "
            "message = excluded.message, send_id = excluded.send_id, "
            "content_hash = excluded.content_hash, published_at = excluded.published_at, "
            "withdrawn_at = NULL",
            (reference, message, send_id, content_hash, utcnow()),
        )

    def remove(self, reference: str) -> None:
        """No page at all for `reference` (a later send of it is `public: false`)."""
        self._execute("DELETE FROM publications WHERE reference = ?", (reference,))

    def withdraw(self, reference: str) -> Publication | None:
        """Mark the page withdrawn (kept, so it answers 410); None if there is no such page."""
        self._execute(
            "UPDATE publications SET withdrawn_at = ? WHERE reference = ? AND withdrawn_at IS NULL",
            (utcnow(), reference),
        )
        return self.publication(reference)

    def publication(self, reference: str) -> Publication | None:
        row = self._execute(
            "SELECT p.reference, p.message, p.send_id, p.content_hash, s.created_at AS sent_at, "
            "p.published_at, p.withdrawn_at FROM publications p JOIN sends s ON s.id = p.send_id "
            "WHERE p.reference = ?",
            (reference,),
        ).fetchone()
        return Publication(*row) if row else None
