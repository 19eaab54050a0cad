"""INSERT … ON CONFLICT for either back end: both SQLite and PostgreSQL spell it the same, but
SQLAlchemy builds it from each dialect's own `insert`."""

from __future__ import annotations

from sqlalchemy import Connection, Table


def upsert_insert(connection: Connection, table: Table):
    """`insert(table)` with `.on_conflict_do_nothing()` / `.on_conflict_do_update()`.

    The dialects are imported here: PostgreSQL's costs a SQLite `status` 40 ms at start-up.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
