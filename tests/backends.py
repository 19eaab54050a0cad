"""Run a test on both ledger back ends, and look at (or change) its rows on either.

The `backend` fixture is parametrized `sqlite` / `postgresql`; asking for it runs the test twice:

- sqlite: BULLETIN_DB as a user leaves it, `bulletin.db` in the working folder (`workdir`);
- postgresql: a fresh database of the session's throw-away server (tests/postgres.py), already
  at the newest schema, put in BULLETIN_DB so the CLI, child processes and `load_settings` use it.

Fixtures that send during their set-up (e.g. `sent`) must ask for `backend` themselves, so it is
in place first. Tests read rows with plain SQL written once for both back ends (named `:params`)
through SQLAlchemy; the ledger's own code is what is under test, so none of it is used here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.pool import NullPool


class Backend:
    """One test's tracking database: `db` is what BULLETIN_DB holds (a path or a URL)."""

    def __init__(self, name: str, db: str | Path) -> None:
        self.name = name
        self.db = db
        self._engine: Engine | None = None

    def __repr__(self) -> str:
        return self.name

    @property
    def sqlite(self) -> bool:
        return self.name == "sqlite"

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def engine(self) -> Engine:
        if self._engine is None:
            url = (
                f"sqlite:///{self.db}"
                if self.sqlite
                else str(self.db).replace("postgresql://", "postgresql+psycopg://", 1)
            )
            # No pool: a connection kept open would hold SQLite locks between statements.
            self._engine = create_engine(url, poolclass=NullPool)
        return self._engine

    def exists(self) -> bool:
        """False only for a SQLite file not created yet (reading must not create it)."""
        return self.postgres or Path(self.db).exists()

    def rows(self, sql: str, **params) -> list[RowMapping]:
        """The rows of a SELECT, by column name (`row["state"]`); [] without a database."""
        if not self.exists():
            return []
        with self.engine().connect() as c:
            return list(c.execute(text(sql), params).mappings())

    def tuples(self, sql: str, **params) -> list[tuple]:
        """The rows of a SELECT as plain tuples; [] without a database."""
        if not self.exists():
            return []
        with self.engine().connect() as c:
            return [tuple(row) for row in c.execute(text(sql), params)]

    def scalar(self, sql: str, **params):
        with self.engine().connect() as c:
            return c.execute(text(sql), params).scalar()

    def execute(self, sql: str, **params) -> None:
        """Change rows behind bulletin's back (committed), e.g. to age a send."""
        with self.engine().begin() as c:
            c.execute(text(sql), params)

    def tables(self) -> list[str]:
        if not self.exists():
            return []
        return inspect(self.engine()).get_table_names()

    def written(self) -> bool:
        """Whether bulletin stored anything: the SQLite file exists, or a table has a row."""
        if self.sqlite:
            return self.exists()
        return any(
            self.scalar(f"SELECT COUNT(*) FROM {table}")
            for table in self.tables()
            if table != "alembic_version"
        )

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def as_backend(db: Backend | str | Path) -> Backend:
    """A Backend for helpers that also take a plain SQLite path (the SQLite-only test files)."""
    if isinstance(db, Backend):
        return db
    return Backend("postgresql" if "://" in str(db) else "sqlite", db)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    """The test's tracking database on one back end (see the module docstring)."""
    if request.param == "sqlite":
        chosen = Backend("sqlite", workdir / "bulletin.db")
    else:
        url = request.getfixturevalue("migrated_postgres_database")
        monkeypatch.setenv("BULLETIN_DB", url)
        chosen = Backend("postgresql", url)
    yield chosen
    chosen.close()
