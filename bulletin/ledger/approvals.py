"""The sign-off record (issue 17): all storage of its tables, and nothing else.

Tables (schema.py, revision 0004): `approval_events` (requests, approvals and "ask for
changes", one row each, with the message text of that version for diffs), `send_versions`
(the fingerprint and audience count a send went out with) and `send_approvals` (the approvals
it went out under). Constructed from a Ledger, whose transactions it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bulletin.ledger import schema
from bulletin.ledger.dialect import upsert_insert
from bulletin.ledger.keys import utcnow

if TYPE_CHECKING:
    from bulletin.ledger.store import Ledger

A = schema.approval_events
V = schema.send_versions
SA = schema.send_approvals


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


def _event(row) -> ApprovalEvent:
    values = dict(row._mapping)
    values["kind"] = Kind(values["kind"])
    return ApprovalEvent(**values)


class ApprovalStore:
    """Reads and writes of the sign-off record, by intent."""

    def __init__(self, tracker: Ledger) -> None:
        self.tracker = tracker

    def _events(self, *where, order=A.c.id, limit: int | None = None) -> list[ApprovalEvent]:
        query = select(A).where(*where).order_by(order)
        if limit is not None:
            query = query.limit(limit)
        with self.tracker.transaction(write=False) as c:
            return [_event(r) for r in c.execute(query).all()]

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
        with self.tracker.transaction() as c:
            # ON CONFLICT (request_id) DO NOTHING: a used link inserts nothing, and the
            # transaction stays usable on PostgreSQL (an IntegrityError would abort it).
            statement = (
                upsert_insert(c, A)
                .values(
                    message=message,
                    path=path,
                    fingerprint=fingerprint,
                    kind=kind.value,
                    approver=approver.lower(),
                    approver_name=approver_name,
                    route=route,
                    request_id=request_id,
                    comment=comment,
                    audience=audience,
                    audience_definition=audience_definition,
                    text=text,
                    expires_at=expires_at,
                    created_at=now or utcnow(),
                )
                .on_conflict_do_nothing(index_elements=[A.c.request_id])
                .returning(*A.c)
            )
            row = c.execute(statement).first()
        if row is None:
            raise AlreadyDecided(request_id)
        return _event(row)

    def get(self, event_id: int) -> ApprovalEvent | None:
        found = self._events(A.c.id == event_id)
        return found[0] if found else None

    def decision_for(self, request_id: int) -> ApprovalEvent | None:
        """The approval or "ask for changes" given through this request's link, if any."""
        found = self._events(A.c.request_id == request_id)
        return found[0] if found else None

    def decisions(self, message: str, fingerprint: str) -> list[ApprovalEvent]:
        """Approvals and asks for changes of one version, oldest first."""
        return self._events(
            A.c.message == message,
            A.c.fingerprint == fingerprint,
            A.c.kind.in_([Kind.APPROVED.value, Kind.CHANGES.value]),
        )

    def last_approved_other(self, message: str, fingerprint: str) -> ApprovalEvent | None:
        """The latest approval of another version of the message: what a diff starts from."""
        found = self._events(
            A.c.message == message,
            A.c.fingerprint != fingerprint,
            A.c.kind == Kind.APPROVED.value,
            order=A.c.id.desc(),
            limit=1,
        )
        return found[0] if found else None

    def history(self, message: str) -> list[ApprovalEvent]:
        return self._events(A.c.message == message)

    # --- sends ---

    def record_send(
        self, send_id: int, fingerprint: str, audience: int, approval_ids: list[int]
    ) -> None:
        """The version a send goes out as and the approvals it goes out under (kept once)."""
        now = utcnow()
        with self.tracker.transaction() as c:
            latest = select(func.coalesce(func.max(A.c.id), 0)).scalar_subquery()
            c.execute(
                upsert_insert(c, V)
                .values(
                    send_id=send_id,
                    fingerprint=fingerprint,
                    audience=audience,
                    after_event=latest,
                    recorded_at=now,
                )
                .on_conflict_do_nothing()
            )
            if approval_ids:
                c.execute(
                    upsert_insert(c, SA).on_conflict_do_nothing(),
                    [{"send_id": send_id, "approval_id": i} for i in approval_ids],
                )

    def send_versions(self, send_id: int) -> list[SendVersion]:
        with self.tracker.transaction(write=False) as c:
            rows = c.execute(
                select(V).where(V.c.send_id == send_id).order_by(V.c.recorded_at)
            ).all()
        return [SendVersion(**r._mapping) for r in rows]

    def send_approvals(self, send_id: int) -> list[ApprovalEvent]:
        with self.tracker.transaction(write=False) as c:
            rows = c.execute(
                select(A)
                .join(SA, SA.c.approval_id == A.c.id)
                .where(SA.c.send_id == send_id)
                .order_by(A.c.id)
            ).all()
        return [_event(r) for r in rows]
