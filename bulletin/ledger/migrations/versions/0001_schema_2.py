"""Schema 2 of release 0.1.0: sends, deliveries, suppressions, events, purged_sends.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

The tables exactly as bulletin/tracking.py's `PRAGMA user_version` migrations 0 → 1 → 2 made
them. A SQLite file written by that release is stamped at this revision rather than rebuilt
(bulletin.ledger.migrate.adopt_legacy). Written out in full, not from schema.py, so that later
changes to the metadata never change what this revision did.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sends",
        sa.Column("id", Id, sa.Identity(), primary_key=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("reference", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("category", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("transport", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("completed_at", sa.Text),
        sa.PrimaryKeyConstraint("id", name="sends_pkey"),
    )
    op.create_index("sends_message", "sends", ["message", "id"])
    op.create_table(
        "deliveries",
        sa.Column("id", Id, sa.Identity(), primary_key=True),
        sa.Column("send_id", Id, nullable=False),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("email_key", sa.Text, nullable=False),
        sa.Column("first_name", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("last_name", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("ward", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("state", sa.Text, nullable=False, server_default=sa.text("'pending'")),
        sa.Column("message_id", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.Column("opened", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("clicked", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("first_opened_at", sa.Text),
        sa.Column("last_opened_at", sa.Text),
        sa.Column("first_clicked_at", sa.Text),
        sa.Column("last_clicked_at", sa.Text),
        sa.PrimaryKeyConstraint("id", name="deliveries_pkey"),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="deliveries_send_id_fkey"),
        sa.UniqueConstraint("send_id", "email_key", name="deliveries_send_id_email_key_key"),
    )
    op.create_index("deliveries_state", "deliveries", ["send_id", "state"])
    op.create_index("deliveries_message_id", "deliveries", ["message_id"])
    op.create_index("deliveries_email", "deliveries", ["email_key"])
    op.create_table(
        "suppressions",
        sa.Column("email_hash", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default=sa.text("'manual'")),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("email_hash", name="suppressions_pkey"),
    )
    op.create_table(
        "events",
        sa.Column("id", Id, sa.Identity(), primary_key=True),
        sa.Column("sg_event_id", sa.Text),
        sa.Column("delivery_id", Id),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("email", sa.Text),
        sa.Column("timestamp", sa.BigInteger().with_variant(sa.Integer(), "sqlite")),
        sa.Column("reason", sa.Text),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("received_at", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="events_pkey"),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], name="events_delivery_id_fkey"),
        sa.UniqueConstraint("sg_event_id", name="events_sg_event_id_key"),
    )
    op.create_index("events_delivery", "events", ["delivery_id"])
    op.create_table(
        "purged_sends",
        sa.Column("send_id", Id, nullable=False, autoincrement=False),
        sa.Column("purged_at", sa.Text, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("send_id", name="purged_sends_pkey"),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="purged_sends_send_id_fkey"),
    )
    if op.get_bind().dialect.name == "sqlite":
        # Release 0.1.0 opens this file as its own schema 2 and refuses anything newer; later
        # revisions that change the tables raise this number past 2 (docs/ledger-plan.md).
        op.execute("PRAGMA user_version = 2")


def downgrade() -> None:
    for table in ("purged_sends", "events", "suppressions", "deliveries", "sends"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 0")
