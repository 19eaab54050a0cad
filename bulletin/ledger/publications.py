"""The public pages' storage (issue 21): every statement about them, in one class.

Two tables (schema.py, revision 0004): `sent_sources` keeps the message file's bytes as each
send began, keyed by the content hash the send recorded, so a page always shows what was sent;
`publications` has one row per reference, naming the send whose content it shows and whether
(when) it was withdrawn. Opening a page only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, select, update

from bulletin.ledger import schema
from bulletin.ledger.dialect import upsert_insert
from bulletin.ledger.keys import utcnow

if TYPE_CHECKING:
    from bulletin.ledger.store import Ledger

SRC = schema.sent_sources
PUB = schema.publications
S = schema.sends


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
    """Reads and writes of `sent_sources` and `publications`, through a Ledger's transactions."""

    def __init__(self, tracker: Ledger) -> None:
        self.tracker = tracker

    def keep_source(self, content_hash: str, message: str, source: bytes) -> None:
        """Keep the bytes of a sent version (once: the same hash is the same bytes)."""
        with self.tracker.transaction() as c:
            c.execute(
                upsert_insert(c, SRC)
                .values(
                    content_hash=content_hash, message=message, source=source, created_at=utcnow()
                )
                .on_conflict_do_nothing()
            )

    def source(self, content_hash: str) -> bytes | None:
        with self.tracker.transaction(write=False) as c:
            found = c.execute(
                select(SRC.c.source).where(SRC.c.content_hash == content_hash)
            ).first()
        return bytes(found[0]) if found else None

    def publish(self, reference: str, message: str, send_id: int, content_hash: str) -> None:
        """The page for `reference` shows this send's content from now on (again, if withdrawn)."""
        with self.tracker.transaction() as c:
            statement = upsert_insert(c, PUB).values(
                reference=reference,
                message=message,
                send_id=send_id,
                content_hash=content_hash,
                published_at=utcnow(),
                withdrawn_at=None,
            )
            new = statement.excluded
            c.execute(
                statement.on_conflict_do_update(
                    index_elements=[PUB.c.reference],
                    set_={
                        "message": new.message,
                        "send_id": new.send_id,
                        "content_hash": new.content_hash,
                        "published_at": new.published_at,
                        "withdrawn_at": None,
                    },
                )
            )

    def remove(self, reference: str) -> None:
        """No page at all for `reference` (a later send of it is `public: false`)."""
        with self.tracker.transaction() as c:
            c.execute(delete(PUB).where(PUB.c.reference == reference))

    def withdraw(self, reference: str) -> Publication | None:
        """Mark the page withdrawn (kept, so it answers 410); None if there is no such page."""
        with self.tracker.transaction() as c:
            c.execute(
                update(PUB)
                .where(PUB.c.reference == reference, PUB.c.withdrawn_at.is_(None))
                .values(withdrawn_at=utcnow())
            )
            return self.publication(reference)

    def publication(self, reference: str) -> Publication | None:
        with self.tracker.transaction(write=False) as c:
            row = c.execute(
                select(
                    PUB.c.reference,
                    PUB.c.message,
                    PUB.c.send_id,
                    PUB.c.content_hash,
                    S.c.created_at.label("sent_at"),
                    PUB.c.published_at,
                    PUB.c.withdrawn_at,
                )
                .join(S, S.c.id == PUB.c.send_id)
                .where(PUB.c.reference == reference)
            ).first()
        return Publication(**row._mapping) if row else None
