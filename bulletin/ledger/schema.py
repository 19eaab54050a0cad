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
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
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

# Parents before children: the order to copy in (and to empty in reverse).
TABLES: tuple[Table, ...] = tuple(metadata.sorted_tables)
