"""The tracking tables as SQLAlchemy Core metadata: one schema for SQLite and PostgreSQL.

Alembic revision 0001 created schema 2 of the `PRAGMA user_version` scheme of release 0.1.0;
later revisions (0002, 0003, …) change the scripts and this metadata together,
and tests/test_ledger_foundation.py checks that a migrated database matches this metadata.

Times stay ISO 8601 text (UTC, seconds), as release 0.1.0 wrote them, so a history copies
between back ends unchanged and sorts as text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# PostgreSQL's own default names, so a constraint is named the same whoever created it.
NAMING = {
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}

# 64-bit ids on PostgreSQL; on SQLite the column must be spelt INTEGER to be the rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(naming_convention=NAMING)

sends = Table(
    "sends",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("message", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("reference", Text, nullable=False, server_default=text("''")),
    Column("category", Text, nullable=False, server_default=text("''")),
    Column("content_hash", Text, nullable=False),
    Column("transport", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    Column("completed_at", Text),
    Column("open_tracking", Integer),  # revision 0002; NULL: not recorded
    Column("click_tracking", Integer),
    Index("sends_message", "message", "id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("send_id", Id, ForeignKey("sends.id"), nullable=False),
    Column("email", Text, nullable=False),
    Column("email_key", Text, nullable=False),
    Column("first_name", Text, nullable=False, server_default=text("''")),
    Column("last_name", Text, nullable=False, server_default=text("''")),
    Column("ward", Text, nullable=False, server_default=text("''")),
    Column("state", Text, nullable=False, server_default=text("'pending'")),
    Column("message_id", Text),
    Column("error", Text),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("opened", Integer, nullable=False, server_default=text("0")),
    Column("clicked", Integer, nullable=False, server_default=text("0")),
    Column("first_opened_at", Text),
    Column("last_opened_at", Text),
    Column("first_clicked_at", Text),
    Column("last_clicked_at", Text),
    Column("cause", Text),  # revision 0003: why bulletin dropped it (states.Cause)
    Column("lease", Text),  # revision 0005: the holder that claimed a `sending` row
    Column("fields", Text),  # revision 0006: JSON of the merge values its copy is built from
    UniqueConstraint("send_id", "email_key"),
    Index("deliveries_state", "send_id", "state"),
    Index("deliveries_message_id", "message_id"),
    Index("deliveries_email", "email_key"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("email_hash", Text, primary_key=True),
    Column("email", Text),
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False, server_default=text("'manual'")),
    Column("created_at", Text, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("sg_event_id", Text, unique=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id")),
    Column("event", Text, nullable=False),
    Column("email", Text),
    Column("timestamp", BigInteger().with_variant(Integer(), "sqlite")),
    Column("reason", Text),
    Column("payload", Text, nullable=False),
    Column("received_at", Text, nullable=False),
    Index("events_delivery", "delivery_id"),
)

# `bulletin purge` keeps a send's totals (JSON) after deleting its rows (issue 8).
purged_sends = Table(
    "purged_sends",
    metadata,
    Column("send_id", Id, ForeignKey("sends.id"), primary_key=True, autoincrement=False),
    Column("purged_at", Text, nullable=False),
    Column("counts", Text, nullable=False),
)

# `bulletin run`'s notices already given, so an unchanged one is printed once (revision 0003).
run_notices = Table(
    "run_notices",
    metadata,
    Column("key", Text, primary_key=True),
    Column("first_given_at", Text, nullable=False),
)

# --- revision 0004: the features built on the old Tracker (issues 17, 18, 21) -----------------

# "Was this useful?" answers, one per delivery (issue 18; bulletin/ledger/feedback.py).
# delivery_id becomes NULL when `purge` deletes the delivery: the answer still counts.
feedback = Table(
    "feedback",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("send_id", Id, ForeignKey("sends.id"), nullable=False),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="SET NULL"), unique=True),
    Column("answer", Text, nullable=False),
    Column("comment", Text, nullable=False, server_default=text("''")),
    Column("answered_at", Text, nullable=False),
    Column("commented_at", Text),
    CheckConstraint("answer IN ('useful', 'not_useful', 'concern')", name="feedback_answer_check"),
    Index("feedback_send", "send_id", "answer"),
)

# Sign-off before send (issue 17; bulletin/ledger/approvals.py): one row per request, approval
# or "ask for changes" of one version (fingerprint); a link's decision names its request, once.
approval_events = Table(
    "approval_events",
    metadata,
    Column("id", Id, Identity(), primary_key=True),
    Column("message", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("approver", Text, nullable=False),
    Column("approver_name", Text, nullable=False, server_default=text("''")),
    Column("route", Text, nullable=False),
    Column("request_id", Id, ForeignKey("approval_events.id"), unique=True),
    Column("comment", Text, nullable=False, server_default=text("''")),
    Column("audience", Integer, nullable=False),
    Column("audience_definition", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("expires_at", Text),
    Column("created_at", Text, nullable=False),
    Index("approval_events_message", "message", "fingerprint", "id"),
)

# The version a send went out as, and the approvals it went out under.
send_versions = Table(
    "send_versions",
    metadata,
    Column("send_id", Id, ForeignKey("sends.id"), primary_key=True, autoincrement=False),
    Column("fingerprint", Text, primary_key=True),
    Column("audience", Integer, nullable=False),
    Column("after_event", Id, nullable=False),
    Column("recorded_at", Text, nullable=False),
)

send_approvals = Table(
    "send_approvals",
    metadata,
    Column("send_id", Id, ForeignKey("sends.id"), primary_key=True, autoincrement=False),
    Column(
        "approval_id",
        Id,
        ForeignKey("approval_events.id"),
        primary_key=True,
        autoincrement=False,
    ),
)

# Public pages of sent messages (issue 21; bulletin/ledger/publications.py): the message
# file's bytes as each send began, and one page per reference pointing at the send it shows.
sent_sources = Table(
    "sent_sources",
    metadata,
    Column("content_hash", Text, primary_key=True),
    Column("message", Text, nullable=False),
    Column("source", LargeBinary, nullable=False),
    Column("created_at", Text, nullable=False),
)

publications = Table(
    "publications",
    metadata,
    Column("reference", Text, primary_key=True),
    Column("message", Text, nullable=False),
    Column("send_id", Id, ForeignKey("sends.id"), nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("published_at", Text, nullable=False),
    Column("withdrawn_at", Text),
)

# --- revision 0005: who is sending a send (issue 13; docs/ledger-plan.md "Claims and leases") ---

# One row per process working on a send, renewed every batch. A holder whose `expires_at` has
# passed is dead: the next holder turns its `sending` rows to `unknown`. Times are ISO 8601
# UTC with milliseconds (one format, so they compare as text).
leases = Table(
    "leases",
    metadata,
    Column("send_id", Id, ForeignKey("sends.id"), primary_key=True, autoincrement=False),
    Column("holder", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired_at", Text, nullable=False),
    Column("expires_at", Text, nullable=False),
)

# Parents before children: the order to copy in (and to empty in reverse).
TABLES: tuple[Table, ...] = tuple(metadata.sorted_tables)
