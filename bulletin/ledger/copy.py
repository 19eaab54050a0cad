"""Moving house: copy a whole tracking history from one database to another (issue 13).

SQLite → PostgreSQL when a borough outgrows one machine, and back. Rows stream through in
chunks (one `executemany` per chunk, no per-row objects), tables in dependency order, the
target written in one transaction so a failure leaves it as it was. Ids are kept as they are,
so events still point at their deliveries; PostgreSQL's id sequences are then moved past them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, delete, func, insert, select, text

from bulletin.errors import DatabaseError, InputError
from bulletin.ledger.engine import describe, transaction
from bulletin.ledger.migrate import current_revision, head_revision, upgrade
from bulletin.ledger.schema import TABLES

CHUNK = 5_000


@dataclass(frozen=True)
class CopyResult:
    """How many rows of each table were copied, and how many the target held before (force)."""

    rows: dict[str, int] = field(default_factory=dict)
    replaced: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_database(
    source: Engine, target: Engine, *, force: bool = False, chunk: int = CHUNK
) -> CopyResult:
    """Copy every row of `source` into `target`; refuse a target that holds rows unless `force`.

    The source must be at this bulletin's newest schema (run `bulletin db upgrade` on it first);
    the target is created or upgraded to it. With `force`, the target's rows are deleted first.
    """
    if describe(source) == describe(target) and source.dialect.name == target.dialect.name:
        raise InputError(f"{describe(source)} is both the source and the target of the copy")
    head = head_revision()
    revision = current_revision(source)
    if revision != head:
        raise DatabaseError(
            f"tracking database {describe(source)} is at schema revision {revision or 'none'}, "
            f"not {head}; run `bulletin db upgrade` on it first"
        )
    upgrade(target)
    with transaction(source, write=False) as reader, transaction(target, write=True) as writer:
        if reader.dialect.name == "postgresql":  # one consistent snapshot of every table
            reader.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        existing = _row_counts(writer)
        if any(existing.values()) and not force:
            held = ", ".join(f"{n} {name}" for name, n in existing.items() if n)
            raise InputError(
                f"{describe(target)} already holds a tracking history ({held}); copy into an "
                "empty database, or pass --force to replace it"
            )
        for table in reversed(TABLES):
            if existing[table.name]:
                writer.execute(delete(table))
        copied = {table.name: _copy_table(reader, writer, table, chunk) for table in TABLES}
        if writer.dialect.name == "postgresql":
            _move_sequences(writer)
    return CopyResult(rows=copied, replaced={k: v for k, v in existing.items() if v})


def _row_counts(connection: Connection) -> dict[str, int]:
    return {
        table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
        for table in TABLES
    }


def _copy_table(reader: Connection, writer: Connection, table, chunk: int) -> int:
    """Stream one table across in primary-key order, `chunk` rows per executemany."""
    query = select(table).order_by(*table.primary_key.columns)
    result = reader.execution_options(yield_per=chunk).execute(query)
    statement = insert(table)
    copied = 0
    for rows in result.partitions(chunk):
        writer.execute(statement, [row._asdict() for row in rows])
        copied += len(rows)
    return copied


def _move_sequences(writer: Connection) -> None:
    """After explicit ids, make each identity column's next value follow the largest copied."""
    for table in TABLES:
        column = next((c for c in table.primary_key.columns if c.identity is not None), None)
        if column is None:
            continue
        writer.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence(:table, :column), "
                f"COALESCE((SELECT MAX({column.name}) FROM {table.name}), 0) + 1, false)"
            ),
            {"table": table.name, "column": column.name},
        )
