"""The sign-off record (issue 17): every SQL statement on its tables, and nothing else.

Tables (tracking.py, migration 3 → 4): `approval_events` (requests, approvals and "ask for
changes", one row each, with the message text of that version for diffs), `send_versions`
(the fingerprint and audience count a send went out with) and `send_approvals` (the approvals
it went out under). Constructed from a Tracker, whose connection and transactions it uses.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from bulletin.tracking import Tracker, utcnow


class Kind(StrEnum):
    REQUEST = "request"
    APPROVED = "approved"
    CHANGES = "changes"  # the approver asked for changes: a refusal of this version


class Route(StrEnum):
    LINK = "email link"
    IN_PERSON = "in person at the command line"


@dataclass(frozen=True)
class ApprovalEvent:
    id: int
    message: str
    path: str
    fingerprint: str
    kind: Kind
    approver: str
    approver_name: str
    route: str
    request_id: int | None
    comment: str
    audience: int
    audience_definition: str
    text: str
    expires_at: str | None
    created_at: str

    @property
    def who(self) -> str:
        return f"{self.approver_name} <{self.approver}>" if self.approver_name else self.approver


@dataclass(frozen=True)
class SendVersion:
    send_id: int
    fingerprint: str
    audience: int
    after_event: int  # the latest approval event when the send began: orders the history
    recorded_at: str


class AlreadyDecided(Exception):
    """The request behind a link already has its decision: the link was used."""


def _event(row: sqlite3.Row) -> ApprovalEvent:
    values = dict(row)
    values["kind"] = Kind(values["kind"])
    return ApprovalEvent(**values)


class ApprovalStore:
    """Reads and writes of the sign-off record, by intent."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def add(
        self,
        *,
        message: str,
        path: str,
        fingerprint: str,
        kind: Kind,
        approver: str,
        approver_name: str = "",
        route: str,
        audience: int,
        audience_definition: str,
        text: str,
        request_id: int | None = None,
        comment: str = "",
        expires_at: str | None = None,
        now: str | None = None,
    ) -> ApprovalEvent:
        """Record one request or decision; AlreadyDecided if its request has one already."""
        with self.tracker.transaction() as db:
            try:
                cursor = db.execute(
                    "INSERT INTO approval_events (message, path, fingerprint, kind, approver,"
                    " approver_name, route, request_id, comment, audience, audience_definition,"
                    " text, expires_at, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        message,
                        path,
                        fingerprint,
                        kind.value,
                        approver.lower(),
                        approver_name,
                        route,
                        request_id,
                        comment,
                        audience,
                        audience_definition,
                        text,
                        expires_at,
                        now or utcnow(),
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyDecided(request_id) from None
            row = db.execute(
                "SELECT * FROM approval_events WHERE id = ?", (cursor.lastrowid,)
            ).fetchone()
        return _event(row)

    def get(self, event_id: int) -> ApprovalEvent | None:
        row = self.tracker.execute(
            "SELECT * FROM approval_events WHERE id = ?", (event_id,)
        ).fetchone()
        return _event(row) if row else None

    def decision_for(self, request_id: int) -> ApprovalEvent | None:
        """The approval or "ask for changes" given through this request's link, if any."""
        row = self.tracker.execute(
            "SELECT * FROM approval_events WHERE request_id = ?", (request_id,)
        ).fetchone()
        return _event(row) if row else None

    def decisions(self, message: str, fingerprint: str) -> list[ApprovalEvent]:
        """Approvals and asks for changes of one version, oldest first."""
        rows = self.tracker.execute(
            "SELECT * FROM approval_events WHERE message = ? AND fingerprint = ? "
            "AND kind IN (?, ?) ORDER BY id",
            (message, fingerprint, Kind.APPROVED.value, Kind.CHANGES.value),
        ).fetchall()
        return [_event(r) for r in rows]

    def last_approved_other(self, message: str, fingerprint: str) -> ApprovalEvent | None:
        """The latest approval of another version of the message: what a diff starts from."""
        row = self.tracker.execute(
            "SELECT * FROM approval_events WHERE message = ? AND fingerprint != ? AND kind = ? "
            "ORDER BY id DESC LIMIT 1",
            (message, fingerprint, Kind.APPROVED.value),
        ).fetchone()
        return _event(row) if row else None

    def history(self, message: str) -> list[ApprovalEvent]:
        rows = self.tracker.execute(
            "SELECT * FROM approval_events WHERE message = ? ORDER BY id", (message,)
        ).fetchall()
        return [_event(r) for r in rows]

    # --- sends ---

    def record_send(
        self, send_id: int, fingerprint: str, audience: int, approval_ids: list[int]
    ) -> None:
        """The version a send goes out as and the approvals it goes out under (kept once)."""
        now = utcnow()
        with self.tracker.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO send_versions (send_id, fingerprint, audience,"
                " after_event, recorded_at) VALUES (?, ?, ?,"
                " (SELECT COALESCE(MAX(id), 0) FROM approval_events), ?)",
                (send_id, fingerprint, audience, now),
            )
            db.executemany(
                "INSERT OR IGNORE INTO send_approvals (send_id, approval_id) VALUES (?, ?)",
                [(send_id, approval_id) for approval_id in approval_ids],
            )

    def send_versions(self, send_id: int) -> list[SendVersion]:
        rows = self.tracker.execute(
            "SELECT * FROM send_versions WHERE send_id = ? ORDER BY recorded_at", (send_id,)
        ).fetchall()
        return [SendVersion(**dict(r)) for r in rows]

    def send_approvals(self, send_id: int) -> list[ApprovalEvent]:
        rows = self.tracker.execute(
            "SELECT e.* FROM approval_events e JOIN send_approvals s ON s.approval_id = e.id "
            "WHERE s.send_id = ? ORDER BY e.id",
            (send_id,),
        ).fetchall()
        return [_event(r) for r in rows]
