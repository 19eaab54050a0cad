"""Readers' "Was this useful?" answers: all of their storage, in one class (issue 18).

The table (schema.feedback, revision 0004):

    feedback(id, send_id → sends, delivery_id → deliveries UNIQUE ON DELETE SET NULL,
             answer IN ('useful', 'not_useful', 'concern'), comment, answered_at, commented_at)

One row per delivery: answering again replaces the answer and the comment. `forget` deletes a
person's rows; `purge` blanks comments older than its cut-off and keeps the answers, so the
counts stay (a purged send's rows lose their delivery, and so their ward, but still count).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import and_, delete, func, or_, select, update

from bulletin.feedback import ANSWERS
from bulletin.ledger import schema
from bulletin.ledger.dialect import upsert_insert
from bulletin.ledger.keys import utcnow

if TYPE_CHECKING:
    from bulletin.ledger.store import Ledger

F = schema.feedback
D = schema.deliveries
IN_CHUNK = 500


@dataclass(frozen=True)
class Answer:
    """One recipient's answer, as the page and the export show it."""

    send_id: int
    delivery_id: int | None
    answer: str
    comment: str
    answered_at: str
    commented_at: str | None
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    ward: str = ""


@dataclass(frozen=True)
class WardFeedback:
    ward: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


_ANSWER = (F.c.send_id, F.c.delivery_id, F.c.answer, F.c.comment, F.c.answered_at, F.c.commented_at)
_PEOPLE = (
    func.coalesce(D.c.email, "").label("email"),
    func.coalesce(D.c.first_name, "").label("first_name"),
    func.coalesce(D.c.last_name, "").label("last_name"),
    func.coalesce(D.c.ward, "").label("ward"),
)


def _with_people():
    return select(*_ANSWER, *_PEOPLE).select_from(F.outerjoin(D, D.c.id == F.c.delivery_id))


class FeedbackStore:
    """Reads and writes of the `feedback` table, through a Ledger's transactions.

    Each method is one transaction, or joins the caller's: privacy.py runs `forget_deliveries`
    and `purge_comments` inside the erasure's, so they commit or roll back with it.
    """

    def __init__(self, tracker: Ledger) -> None:
        self.tracker = tracker

    def record(
        self, send_id: int, delivery_id: int, answer: str, comment: str, *, now: str | None = None
    ) -> None:
        """Store this delivery's answer, replacing any earlier one (and its comment)."""
        if answer not in ANSWERS:
            raise ValueError(f"unknown answer {answer!r}")
        now = now or utcnow()
        with self.tracker.transaction() as c:
            statement = upsert_insert(c, F).values(
                send_id=send_id,
                delivery_id=delivery_id,
                answer=answer,
                comment=comment,
                answered_at=now,
                commented_at=now if comment else None,
            )
            new = statement.excluded
            c.execute(
                statement.on_conflict_do_update(
                    index_elements=[F.c.delivery_id],
                    set_={
                        "answer": new.answer,
                        "comment": new.comment,
                        "answered_at": new.answered_at,
                        "commented_at": new.commented_at,
                    },
                )
            )

    def answer_of(self, delivery_id: int) -> Answer | None:
        with self.tracker.transaction(write=False) as c:
            row = c.execute(select(*_ANSWER).where(F.c.delivery_id == delivery_id)).first()
        return Answer(**row._mapping) if row else None

    def counts(self, send_id: int) -> dict[str, int]:
        """{useful, not_useful, concern: N} for a send, zeros included."""
        counts = dict.fromkeys(ANSWERS, 0)
        with self.tracker.transaction(write=False) as c:
            rows = c.execute(
                select(F.c.answer, func.count()).where(F.c.send_id == send_id).group_by(F.c.answer)
            ).all()
        for answer, n in rows:
            counts[answer] = n
        return counts

    def ward_counts(self, send_id: int) -> list[WardFeedback]:
        """Answers by the recipient's ward ('' when unknown, forgotten or purged)."""
        ward = func.coalesce(D.c.ward, "")
        with self.tracker.transaction(write=False) as c:
            rows = c.execute(
                select(ward.label("ward"), F.c.answer, func.count().label("n"))
                .select_from(F.outerjoin(D, D.c.id == F.c.delivery_id))
                .where(F.c.send_id == send_id)
                .group_by(ward, F.c.answer)
                .order_by(ward)
            ).all()
        by_ward: dict[str, dict[str, int]] = {}
        for row in rows:
            by_ward.setdefault(row.ward, dict.fromkeys(ANSWERS, 0))[row.answer] = row.n
        return [WardFeedback(w, counts) for w, counts in by_ward.items()]

    def comments(self, send_id: int) -> list[Answer]:
        """Answers with a comment, newest comment first."""
        with self.tracker.transaction(write=False) as c:
            rows = c.execute(
                _with_people()
                .where(F.c.send_id == send_id, F.c.comment != "")
                .order_by(F.c.commented_at.desc(), F.c.id.desc())
            ).all()
        return [Answer(**r._mapping) for r in rows]

    def answers(self, send_id: int) -> list[Answer]:
        """Every answer of a send with who gave it (blank once forgotten/purged), oldest first."""
        with self.tracker.transaction(write=False) as c:
            rows = c.execute(
                _with_people().where(F.c.send_id == send_id).order_by(F.c.answered_at, F.c.id)
            ).all()
        return [Answer(**r._mapping) for r in rows]

    # --- data protection: run inside privacy.py's transaction ------------------------------

    def forget_deliveries(self, delivery_ids: Iterable[int]) -> int:
        """Delete the answers and comments of these deliveries (one person's); how many."""
        ids = [int(i) for i in delivery_ids]
        deleted = 0
        with self.tracker.transaction() as c:
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                deleted += c.execute(delete(F).where(F.c.delivery_id.in_(chunk))).rowcount
        return deleted

    def purge_comments(
        self, before: str, send_ids: Iterable[int] = (), *, dry_run: bool = False
    ) -> int:
        """Blank comments made before `before` (ISO time) and every comment of `send_ids`
        (sends being purged); the answers stay, so the counts do. Returns how many."""
        sends = [int(i) for i in send_ids]
        old = F.c.commented_at < before
        where = and_(F.c.comment != "", or_(old, F.c.send_id.in_(sends)) if sends else old)
        with self.tracker.transaction(write=not dry_run) as c:
            if dry_run:
                return int(c.execute(select(func.count()).select_from(F).where(where)).scalar_one())
            return c.execute(update(F).where(where).values(comment="", commented_at=None)).rowcount
