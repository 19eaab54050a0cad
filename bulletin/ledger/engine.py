"""Connections to the tracking database: a SQLite file, or a PostgreSQL server by URL.

`make_engine(db)` takes what `BULLETIN_DB` holds. A SQLite file is created readable by its owner
only and opened as bulletin always has (WAL, synchronous=FULL, foreign keys, a busy timeout);
its write transactions take the write lock up front (`BEGIN IMMEDIATE`), so a claim is atomic.
A `postgresql://` URL goes through psycopg 3. Every failure becomes one sentence that names the
database, with any password in the URL masked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)

from bulletin.errors import ConfigError, DatabaseError

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 10
WRITE = "bulletin_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


def is_postgres_url(db: str | Path) -> bool:
    """True when BULLETIN_DB names a server (`scheme://…`) rather than a SQLite file."""
    return isinstance(db, str) and "://" in db


def make_engine(db: str | Path, *, check: bool = True, timeout: float | None = None) -> Engine:
    """An engine for a SQLite path or a `postgresql://` URL.

    With `check`, a PostgreSQL server is reached once now, so a wrong host or password is
    reported before any work starts rather than half-way through a send.
    """
    if not is_postgres_url(db):
        return _sqlite_engine(Path(db), BUSY_TIMEOUT_MS if timeout is None else int(timeout * 1000))
    url = _postgres_url(str(db))
    engine = create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "bulletin"},
    )
    if check:
        try:
            with engine.connect():
                pass
        except SQLAlchemyError as error:
            engine.dispose()
            raise explain(error, engine) from None
    return engine


def describe(engine: Engine) -> str:
    """The database as a person would name it: a file path, or the URL without its password."""
    if engine.dialect.name == "sqlite":
        return str(engine.url.database)
    return _public(engine.url)


@contextmanager
def transaction(
    engine: Engine, *, write: bool = True, kept: Connection | None = None
) -> Iterator[Connection]:
    """One transaction, committed at the end; database failures come out as DatabaseError.

    On SQLite a writing transaction starts with `BEGIN IMMEDIATE` (the write lock up front, as
    tracking.py always did); a reading one with a plain `BEGIN`, which sees one snapshot.
    It runs on a connection from the pool, or on `kept`, a connection the caller holds open.
    """
    try:
        with nullcontext(kept) if kept is not None else engine.connect() as connection:
            connection = connection.execution_options(**{WRITE: write})
            with connection.begin():
                yield connection
    except DBAPIError as error:
        raise explain(error, engine) from None


def explain(error: SQLAlchemyError, engine: Engine) -> DatabaseError:
    """A database failure as one sentence saying what to do; never shows a password."""
    if engine.dialect.name == "sqlite":
        original = getattr(error, "orig", None) or error
        return explain_sqlite(original, Path(str(engine.url.database)))
    where = _public(engine.url)
    text = _driver_message(error, engine.url)
    lower = text.lower()
    user = engine.url.username or "(none)"
    if "password authentication failed" in lower or "no password supplied" in lower:
        hint = (
            f"the server refused the login of user {user}; check the user name and password "
            "in BULLETIN_DB"
        )
    elif "authentication failed" in lower or "pg_hba.conf" in lower:
        hint = f"the server refused user {user}; check BULLETIN_DB and the server's pg_hba.conf"
    elif "database" in lower and "does not exist" in lower:
        hint = (
            f"the database {engine.url.database} does not exist on the server; create it "
            "(createdb) or correct BULLETIN_DB"
        )
    elif (
        "connection refused" in lower
        or "could not connect" in lower
        or "timeout expired" in lower
        or "could not translate host name" in lower
        or "name or service not known" in lower
        or "no route to host" in lower
        or "network is unreachable" in lower
    ):
        hint = (
            f"cannot reach the server at {engine.url.host or 'localhost'}:"
            f"{engine.url.port or 5432}; check that PostgreSQL is running and the host and "
            "port in BULLETIN_DB"
        )
    elif "server closed the connection" in lower or "terminating connection" in lower:
        hint = "the server closed the connection; run the same command again"
    elif "permission denied" in lower:
        hint = f"permission denied ({text}); grant the user in BULLETIN_DB the rights it needs"
    else:
        hint = text
    failure = DatabaseError(f"tracking database {where}: {hint}")
    # The connection was lost (or could not be made): the transaction may be run again on a
    # new one (`Ledger.again`); it either committed or not.
    failure.lost = isinstance(error, DBAPIError) and (
        error.connection_invalidated or isinstance(error, OperationalError)
    )
    return failure


# --- SQLite --------------------------------------------------------------------------------


def explain_sqlite(error: BaseException, path: Path) -> DatabaseError:
    """A SQLite failure as one sentence saying what to do."""
    text = str(error)
    if "locked" in text or "busy" in text:
        hint = "another process holds it locked; wait for it to finish and try again"
    elif "readonly" in text:
        hint = "it is read-only; check the file's permissions (BULLETIN_DB)"
    elif "disk is full" in text or "full" in text or _disk_nearly_full(path):
        hint = "the disk is full; free some space and run the same command again"
    elif "malformed" in text or "not a database" in text:
        hint = "it is damaged or not a bulletin database; restore it from a backup"
    elif "unable to open" in text:
        hint = "it cannot be opened; check BULLETIN_DB and the folder's permissions"
    elif "disk I/O error" in text:
        hint = (
            "writing it failed (disk I/O error); check that the disk has free space and is "
            "writable, then run the same command again"
        )
    else:
        hint = text
    return DatabaseError(f"tracking database {path}: {hint}")


def _disk_nearly_full(path: Path) -> bool:
    """SQLite reports some out-of-space failures (its WAL index) only as "disk I/O error"."""
    try:
        return shutil.disk_usage(path.parent).free < 1024 * 1024
    except OSError:
        return False


def _sqlite_engine(path: Path, busy_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    try:
        _create_private(path)
    except OSError as error:
        raise DatabaseError(
            f"tracking database {path}: it cannot be created ({error.strerror}); check "
            "BULLETIN_DB and the folder's permissions"
        ) from None
    engine = create_engine(
        URL.create("sqlite+pysqlite", database=str(path)),
        connect_args={"timeout": busy_ms / 1000, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        # The driver must not open transactions on its own: `_begin` below does.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (SQLite copies its mode to -wal/-shm)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    os.close(fd)


# --- PostgreSQL ----------------------------------------------------------------------------


def _postgres_url(db: str) -> URL:
    scheme = db.split("://", 1)[0]
    if scheme.lower() not in POSTGRES_SCHEMES:
        raise ConfigError(
            f"BULLETIN_DB: {scheme}:// is not supported; use a SQLite file path or a "
            "postgresql://user@host/database URL"
        )
    try:
        url = make_url(db)
        if not url.database:
            raise ConfigError(
                f"BULLETIN_DB {_public(url)}: the URL names no database; add one at the end "
                "(postgresql://user@host/database)"
            )
        if url.port is not None and not 0 < url.port < 65536:
            raise ValueError(url.port)
        return url.set(drivername="postgresql+psycopg")
    except (ArgumentError, ValueError, NoSuchModuleError):
        raise ConfigError(
            "BULLETIN_DB is not a valid postgresql:// URL; write it as "
            "postgresql://user:password@host:port/database"
        ) from None


def _public(url: URL) -> str:
    """The URL as it may be printed: password masked, plain `postgresql://` scheme."""
    return url.set(drivername="postgresql").render_as_string(hide_password=True)


def _driver_message(error: SQLAlchemyError, url: URL) -> str:
    """The driver's own first line, with the password scrubbed in case it echoes the URL."""
    original = getattr(error, "orig", None) or error
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    # psycopg puts the useful part ("FATAL: password authentication failed …") last.
    text = next((line for line in reversed(lines) if "FATAL" in line or "failed:" in line), "") or (
        lines[0] if lines else type(original).__name__
    )
    text = text.removeprefix("FATAL:").strip()
    if url.password:
        text = text.replace(str(url.password), "***")
    return text
