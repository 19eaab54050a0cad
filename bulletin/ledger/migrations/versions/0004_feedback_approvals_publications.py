"""The tables of feedback (issue 18), sign-off (issue 17) and public pages (issue 21).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

These features were first built on the sqlite3 Tracker as `PRAGMA user_version` steps 3 → 4
(feedback), 4 → 5 (approval_events, send_versions, send_approvals) and 5 → 6 (sent_sources,
publications); see bulletin/ledger/legacy.py. A file written that way (user_version 4-6, no
alembic_version) is stamped at 0002 (it lacks 0003's `cause`), then 0003 runs and this
revision creates only the tables it does not hold yet. SQLite's user_version goes to 7, so
neither release 0.1.0 nor the sqlite3-Tracker code (schema 6) opens the file.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

from bulletin.ledger import schema

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Parents first. The definitions are schema.py's as of this revision; a later change to one of
# these tables gets its own revision.
TABLES = (
    schema.feedback,
    schema.approval_events,
    schema.send_versions,
    schema.send_approvals,
    schema.sent_sources,
    schema.publications,
)


def upgrade() -> None:
    bind = op.get_bind()
    present = set(inspect(bind).get_table_names())
    for table in TABLES:
        if table.name not in present:  # an adopted sqlite3-Tracker file may hold some already
            table.create(bind)
    if bind.dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 7")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table.name)
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA user_version = 4")
