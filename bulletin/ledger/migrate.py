"""Schema migrations with Alembic, run from code: `upgrade(engine)`, `current_revision(engine)`.

The migration scripts live in bulletin/ledger/migrations (installed with the package); there
is no alembic.ini. A SQLite file written before Alembic (release 0.1.0: `PRAGMA user_version`
1 or 2, no `alembic_version` table) is adopted: brought to schema 2 if need be, stamped at the
matching revision, then upgraded like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, func, inspect, select, text

from bulletin.errors import DatabaseError
from bulletin.ledger import schema
from bulletin.ledger.engine import describe, transaction

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported where it is used: opening a ledger at HEAD (every `status`) needs none
# of it, and it is a quarter of a `status` run's start-up.
MIGRATIONS = Path(__file__).parent / "migrations"

# `PRAGMA user_version` of a file written before Alembic → the revision to stamp it at.
# 4-6 are the sqlite3-Tracker steps of issues 18, 17 and 21 (feedback, sign-off, public pages):
# such a file lacks revision 0003's `cause`, so it is stamped at 0002; 0003 then runs, and
# 0004 creates only the feature tables the file does not hold yet. 7 is what 0004 leaves, 8 0005,
# 9 0006.
LEGACY_REVISIONS = {
    2: "0001",
    3: "0002",
    4: "0002",
    5: "0002",
    6: "0002",
    7: "0004",
    8: "0005",
    9: "0006",
}
# The newest revision; a test checks it against the scripts (loading them costs an open).
HEAD = "0006"

# Any constant: only bulletin's own upgrades take this PostgreSQL advisory lock.
UPGRADE_LOCK = 0x62756C6C  # "bull"


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code, pointing at the packaged scripts."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this bulletin knows."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty database (or one from before Alembic)."""
    from alembic.runtime.migration import MigrationContext

    with transaction(engine, write=False) as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Bring the database to `revision` (default: the newest) and return where it now is.

    Safe to run from several processes at once: SQLite serialises them on its write lock,
    PostgreSQL on an advisory lock held until the transaction ends. All of it is one
    transaction, so a failure leaves the database as it was.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with transaction(engine, write=True) as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(UPGRADE_LOCK)))
        context = MigrationContext.configure(connection)
        known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
        current = context.get_current_revision()
        if current is not None and current not in known:
            raise DatabaseError(
                f"tracking database {describe(engine)} was written by a newer bulletin "
                f"(revision {current}); upgrade bulletin"
            )
        if current is None:
            adopt_legacy(connection, engine)
        command.upgrade(alembic_config(connection), revision)
        return MigrationContext.configure(connection).get_current_revision() or ""


# The table Alembic keeps its revision in, as Alembic itself creates it on SQLite.
ALEMBIC_VERSION_TABLE = """
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL,
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
)
"""


def create_fresh(engine: Engine) -> bool:
    """Make an empty SQLite file the newest schema straight from schema.py, stamped at HEAD
    with HEAD's `user_version`: what running every revision gives (tests/test_ledger_foundation
    compares the two), without importing Alembic or running five revisions, which were most
    of a first `bulletin send`'s set-up. False, touching nothing, if the file holds anything
    (another process may have just created it: the write lock makes that one or the other)."""
    from bulletin.ledger.legacy import SCHEMA_VERSION

    with transaction(engine, write=True) as connection:
        if connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar():
            return False
        schema.metadata.create_all(connection, checkfirst=False)
        connection.exec_driver_sql(ALEMBIC_VERSION_TABLE)
        connection.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES (?)", (HEAD,))
        connection.exec_driver_sql(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
    return True


def adopt_legacy(connection: Connection, engine: Engine) -> str | None:
    """Stamp a pre-Alembic SQLite database at the revision matching its `user_version`.

    Returns the revision stamped, or None when the database is not a legacy one (empty).
    """
    from alembic import command

    if connection.dialect.name != "sqlite":
        return None
    version = connection.exec_driver_sql("PRAGMA user_version").scalar() or 0
    if version == 0:
        if "sends" in inspect(connection).get_table_names():
            raise DatabaseError(
                f"tracking database {describe(engine)} has bulletin's tables but no schema "
                "version; restore it from a backup"
            )
        return None
    if version == 1:  # release 0.1.0's migration 1 → 2 (issue 8)
        schema.purged_sends.create(connection)
        connection.exec_driver_sql("PRAGMA user_version = 2")
        version = 2
    revision = LEGACY_REVISIONS.get(version)
    if revision is None:
        raise DatabaseError(
            f"tracking database {describe(engine)} was written by a newer bulletin "
            f"(schema {version}); upgrade bulletin"
        )
    command.stamp(alembic_config(connection), revision)
    return revision


def make_revision(engine: Engine, message: str) -> None:
    """For developers: write a new revision script from the difference between the database
    (at head) and schema.py. Review and edit it before committing."""
    from alembic import command

    with transaction(engine, write=True) as connection:
        command.revision(alembic_config(connection), message=message, autogenerate=True)


def sqlite_user_version(engine: Engine) -> int:
    """`PRAGMA user_version` of a SQLite database (release 0.1.0's schema number)."""
    with transaction(engine, write=False) as connection:
        return int(connection.execute(text("PRAGMA user_version")).scalar() or 0)
