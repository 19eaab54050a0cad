"""Each queued recipient carries the merge values its copy is built from (issue 13).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

`deliveries.fields`: JSON of the contact fields the message uses (its placeholders and the
To header's name), written as the audience is queued, so a send builds each claimed copy from
its row and never holds the audience in memory. NULL for rows queued before this revision:
those are built from the contact lists, as before. Personal data: `forget` blanks it, `purge`
deletes it with the row. SQLite's user_version goes to 9, so an older bulletin refuses the
file rather than queueing rows without their merge values.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("fields", sa.Text))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 9")


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("fields")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 8")
