"""Readers' "Was this useful?" answers: all of their SQL, in one class (issue 18).

The table (tracking.py's migration 3 → 4):

    feedback(id, send_id → sends, delivery_id → deliveries UNIQUE ON DELETE SET NULL,
             answer IN ('useful', 'not_useful', 'concern'), comment, answered_at, commented_at)

One row per delivery: answering again replaces the answer and the comment. `forget` deletes a
person's rows; `purge` blanks comments older than its cut-off and keeps the answers, so the
counts stay (a purged send's rows lose their delivery, and so their ward, but still count).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from bulletin.feedback import ANSWERS
from bulletin.tracking import Tracker, utcnow


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


class FeedbackStore:
    """Reads and writes of the `feedback` table, on a Tracker's connection.

    `record` takes its own transaction; `forget_deliveries` and `purge_comments` run inside
    the caller's (privacy.py's), so they commit or roll back with the rest of the erasure.
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def record(
        self, send_id: int, delivery_id: int, answer: str, comment: str, *, now: str | None = None
    ) -> None:
        """Store this delivery's answer, replacing any earlier one (and its comment)."""
        if answer not in ANSWERS:
            raise ValueError(f"unknown answer {answer!r}")
        now = now or utcnow()
        with self.tracker.transaction() as db:
            db.execute(
                "INSERT INTO feedback (send_id, delivery_id, answer, comment, answered_at,"
                " commented_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id) DO UPDATE"
                " SET answer = excluded.answer, comment = excluded.comment,"
                " answered_at = excluded.answered_at, commented_at = excluded.commented_at",
                (send_id, delivery_id, answer, comment, now, now if comment else None),
            )

    def answer_of(self, delivery_id: int) -> Answer | None:
        row = self.tracker.execute(
            "SELECT * FROM feedback WHERE delivery_id = ?", (delivery_id,)
        ).fetchone()
        return _answer(row) if row else None

    def counts(self, send_id: int) -> dict[str, int]:
        """{useful, not_useful, concern: N} for a send, zeros included."""
        counts = dict.fromkeys(ANSWERS, 0)
        for row in self.tracker.execute(
            "SELECT answer, COUNT(*) FROM feedback WHERE send_id = ? GROUP BY answer", (send_id,)
        ):
            counts[row[0]] = row[1]
        return counts

    def ward_counts(self, send_id: int) -> list[WardFeedback]:
        """Answers by the recipient's ward ('' when unknown, forgotten or purged)."""
        by_ward: dict[str, dict[str, int]] = {}
        for row in self.tracker.execute(
            "SELECT COALESCE(d.ward, '') AS ward, f.answer, COUNT(*) AS n FROM feedback f "
            "LEFT JOIN deliveries d ON d.id = f.delivery_id WHERE f.send_id = ? "
            "GROUP BY 1, 2 ORDER BY 1",
            (send_id,),
        ):
            by_ward.setdefault(row["ward"], dict.fromkeys(ANSWERS, 0))[row["answer"]] = row["n"]
        return [WardFeedback(ward, counts) for ward, counts in by_ward.items()]

    def comments(self, send_id: int) -> list[Answer]:
        """Answers with a comment, newest comment first."""
        return [
            _answer(row)
            for row in self.tracker.execute(
                f"{_WITH_PEOPLE} WHERE f.send_id = ? AND f.comment != '' "
                "ORDER BY f.commented_at DESC, f.id DESC",
                (send_id,),
            )
        ]

    def answers(self, send_id: int) -> list[Answer]:
        """Every answer of a send with who gave it (blank once forgotten/purged), oldest first."""
        return [
            _answer(row)
            for row in self.tracker.execute(
                f"{_WITH_PEOPLE} WHERE f.send_id = ? ORDER BY f.answered_at, f.id", (send_id,)
            )
        ]

    # --- data protection: run inside privacy.py's transaction ------------------------------

    def forget_deliveries(self, delivery_ids: Iterable[int]) -> int:
        """Delete the answers and comments of these deliveries (one person's); how many."""
        ids = [(int(i),) for i in delivery_ids]
        before = self.tracker.db.total_changes
        self.tracker.db.executemany("DELETE FROM feedback WHERE delivery_id = ?", ids)
        return self.tracker.db.total_changes - before

    def purge_comments(
        self, before: str, send_ids: Iterable[int] = (), *, dry_run: bool = False
    ) -> int:
        """Blank comments made before `before` (ISO time) and every comment of `send_ids`
        (sends being purged); the answers stay, so the counts do. Returns how many."""
        sends = [int(i) for i in send_ids]
        where = "comment != '' AND (commented_at < ?" + (
            f" OR send_id IN ({', '.join('?' * len(sends))}))" if sends else ")"
        )
        if dry_run:
            query = f"SELECT COUNT(*) FROM feedback WHERE {where}"
            return int(self.tracker.db.execute(query, (before, *sends)).fetchone()[0])
        return self.tracker.db.execute(
            f"UPDATE feedback SET comment = '', commented_at = NULL WHERE {where}",
            (before, *sends),
        ).rowcount


_WITH_PEOPLE = (
    "SELECT f.*, COALESCE(d.email, '') AS email, COALESCE(d.first_name, '') AS first_name, "
    "COALESCE(d.last_name, '') AS last_name, COALESCE(d.ward, '') AS ward "
    "FROM feedback f LEFT JOIN deliveries d ON d.id = f.delivery_id"
)


def _answer(row: sqlite3.Row) -> Answer:
    keys = row.keys()
    return Answer(
        send_id=row["send_id"],
        delivery_id=row["delivery_id"],
        answer=row["answer"],
        comment=row["comment"],
        answered_at=row["answered_at"],
        commented_at=row["commented_at"],
        **{k: row[k] for k in ("email", "first_name", "last_name", "ward") if k in keys},
    )
