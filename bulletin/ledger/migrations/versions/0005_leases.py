"""Per-send leases: several processes on one send, two messages at once (issue 13).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

`leases` holds one row per process working on a send (renewed every batch); `deliveries.lease`
names the holder that claimed a `sending` row, so a dead holder's rows (its lease expired) can
be told from a live one's. SQLite's user_version goes to 8, so an older bulletin refuses the
file rather than sending without writing leases.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("lease", sa.Text))
    op.create_table(
        "leases",
        sa.Column("send_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("acquired_at", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["send_id"], ["sends.id"], name="leases_send_id_fkey"),
        sa.PrimaryKeyConstraint("send_id", "holder", name="leases_pkey"),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 8")


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("lease")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 7")
