"""Which of SendGrid's open / click tracking a send asked for (issue 19).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

The twin of tracking.py's `PRAGMA user_version` migration 2 → 3 (wave 1): a SQLite file at
user_version 3 is stamped here. NULL: not recorded (an older send, or a transport that tracks
nothing). Plain ADD COLUMNs, which SQLite does in place.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sends", sa.Column("open_tracking", sa.Integer))
    op.add_column("sends", sa.Column("click_tracking", sa.Integer))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 3")


def downgrade() -> None:
    with op.batch_alter_table("sends") as batch:
        batch.drop_column("click_tracking")
        batch.drop_column("open_tracking")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 2")
