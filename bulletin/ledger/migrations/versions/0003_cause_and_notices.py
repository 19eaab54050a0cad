"""Why bulletin dropped a row (`deliveries.cause`) and `bulletin run`'s remembered notices.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

`cause` replaces the "suppressed: …" prefix report.py used to parse out of `error`; rows
dropped that way before are given their cause here. `run_notices` replaces the JSON side file
`bulletin.db.run-notices.json` (read once by `bulletin run` and then left alone). SQLite's
user_version goes to 4, so a release that knows only schema 3 refuses the file.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("cause", sa.Text))
    op.execute(
        "UPDATE deliveries SET cause = 'suppressed' "
        "WHERE state = 'dropped' AND error LIKE 'suppressed:%'"
    )
    op.create_table(
        "run_notices",
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("first_given_at", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="run_notices_pkey"),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 4")


def downgrade() -> None:
    op.drop_table("run_notices")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("cause")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 3")
