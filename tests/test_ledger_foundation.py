"""The ledger's foundations on SQLite and a real PostgreSQL: engines, migrations, copying.

The upgrade tests use tests/data/ledger/bulletin-v2.db, a file written by release 0.1.0 (see
its README): it must be adopted, not rebuilt, and keep every row.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from postgres import free_port
from sqlalchemy import func, insert, select

from bulletin.errors import ConfigError, ExitCode, InputError
from bulletin.ledger import schema
from bulletin.ledger.copy import copy_database
from bulletin.ledger.engine import make_engine, transaction
from bulletin.ledger.migrate import current_revision, head_revision, upgrade
from bulletin.tracking import DatabaseError, Tracker

FIXTURE = Path(__file__).parent / "data" / "ledger" / "bulletin-v2.db"
FIXTURE_COUNTS = {
    "sends": 2,
    "deliveries": 64,
    "events": 87,
    "suppressions": 5,
    "purged_sends": 0,
    "run_notices": 0,  # revision 0003
    "feedback": 0,  # revision 0004 (issues 17, 18, 21)
    "approval_events": 0,
    "send_versions": 0,
    "send_approvals": 0,
    "sent_sources": 0,
    "publications": 0,
    "leases": 0,  # revision 0005 (issue 13)
}


def _legacy_columns() -> dict[str, list[str]]:
    """The tables and columns release 0.1.0 wrote (later revisions add to them)."""
    with sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: [r[1] for r in db.execute(f"PRAGMA table_info({n})")] for n in names}


LEGACY_COLUMNS = _legacy_columns()


@pytest.fixture
def engines():
    """Engines made in a test, disposed at its end (PostgreSQL drops the database after)."""
    made = []

    def make(db):
        engine = make_engine(db)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


@pytest.fixture
def legacy_db(tmp_path: Path) -> Path:
    """A copy of the release 0.1.0 database (never the committed file itself)."""
    path = tmp_path / "legacy.db"
    shutil.copyfile(FIXTURE, path)
    return path


def counts(engine) -> dict[str, int]:
    with transaction(engine, write=False) as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in schema.TABLES
        }


def all_rows(engine) -> dict[str, list[tuple]]:
    with transaction(engine, write=False) as connection:
        return {
            table.name: [
                tuple(row)
                for row in connection.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in schema.TABLES
        }


def raw_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of release 0.1.0's tables and columns, read with plain sqlite3 as it would."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {
            table.name: db.execute(
                f"SELECT {', '.join(LEGACY_COLUMNS[table.name])} FROM {table.name} ORDER BY "
                + ", ".join(c.name for c in table.primary_key.columns)
            ).fetchall()
            for table in schema.TABLES
            if table.name in LEGACY_COLUMNS
        }


def add_send(engine, *, recipients: int = 3) -> int:
    now = "2026-11-29T10:00:00+00:00"
    with transaction(engine) as connection:
        send_id = connection.execute(
            insert(schema.sends).returning(schema.sends.c.id),
            {
                "message": "eu-referendum",
                "path": "messages/eu-referendum.md",
                "subject": "Key messages",
                "content_hash": "0" * 64,
                "transport": "outbox",
                "created_at": now,
            },
        ).scalar_one()
        connection.execute(
            insert(schema.deliveries),
            [
                {
                    "send_id": send_id,
                    "email": f"person{n}@example.org",
                    "email_key": f"person{n}@example.org",
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(recipients)
            ],
        )
    return send_id


# --- migrations ----------------------------------------------------------------------------


def test_migrations_create_the_schema_the_metadata_describes(ledger_db, engines):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = engines(ledger_db)
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision()
    assert current_revision(engine) == head_revision()
    assert upgrade(engine) == head_revision()  # a second run changes nothing
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), schema.metadata) == []
    assert counts(engine) == dict.fromkeys(FIXTURE_COUNTS, 0)


def test_defaults_and_ids_work_on_both_back_ends(ledger_db, engines):
    engine = engines(ledger_db)
    upgrade(engine)
    send_id = add_send(engine, recipients=2)
    with transaction(engine, write=False) as connection:
        rows = connection.execute(select(schema.deliveries).order_by(schema.deliveries.c.id)).all()
    assert [r.state for r in rows] == ["pending", "pending"]
    assert [(r.opened, r.clicked, r.ward) for r in rows] == [(0, 0, ""), (0, 0, "")]
    assert all(r.send_id == send_id for r in rows)
    assert rows[1].id == rows[0].id + 1


def test_the_same_recipient_twice_in_one_send_is_refused(ledger_db, engines):
    from sqlalchemy.exc import IntegrityError

    engine = engines(ledger_db)
    upgrade(engine)
    send_id = add_send(engine, recipients=1)
    now = "2026-11-29T10:00:00+00:00"
    row = {
        "send_id": send_id,
        "email": "person0@example.org",
        "email_key": "person0@example.org",
        "created_at": now,
        "updated_at": now,
    }
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(schema.deliveries), row)


def test_a_sqlite_database_is_created_private(tmp_path, engines):
    path = tmp_path / "folder" / "bulletin.db"
    upgrade(engines(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_sqlite_engine_uses_todays_pragmas(tmp_path, engines):
    engine = engines(tmp_path / "bulletin.db")
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 10_000


def test_a_new_sqlite_database_carries_the_legacy_number_of_its_revision(tmp_path, engines):
    """Each revision that changes tables raises `PRAGMA user_version`, so an older release
    refuses the file ("written by a newer bulletin") instead of writing into it."""
    from bulletin.ledger import migrate
    from bulletin.tracking import SCHEMA_VERSION

    path = tmp_path / "bulletin.db"
    upgrade(engines(path))
    with Tracker(path) as tracker:
        assert tracker.sends() == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert migrate.LEGACY_REVISIONS[SCHEMA_VERSION] == migrate.HEAD == head_revision()


def _sqlite_schema(path: Path) -> dict:
    """Everything a SQLite file's schema is: per table its columns in order (type, not null,
    default, primary key), its constraints (each clause of its CREATE TABLE that is not a
    column, whitespace aside), foreign keys and indexes (columns, unique, origin, partial);
    the user_version; the Alembic revision."""
    import re

    with sqlite3.connect(path) as db:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        described = {}
        for table in tables:
            (sql,) = db.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            body = sql[sql.index("(") + 1 : sql.rindex(")")]
            clauses, depth, part = [], 0, ""
            for ch in body:  # split at the commas outside parentheses
                depth += (ch == "(") - (ch == ")")
                if ch == "," and depth == 0:
                    clauses.append(part)
                    part = ""
                else:
                    part += ch
            clauses.append(part)
            constraints = sorted(
                " ".join(c.split()) for c in clauses if c.strip().upper().startswith("CONSTRAINT")
            )
            indexes = {
                name: (
                    unique,
                    origin,
                    partial,
                    db.execute(f"PRAGMA index_info('{name}')").fetchall(),
                )
                for _seq, name, unique, origin, partial in db.execute(
                    f"PRAGMA index_list('{table}')"
                )
            }
            described[table] = {
                "columns": db.execute(f"PRAGMA table_xinfo('{table}')").fetchall(),
                "constraints": constraints,
                "foreign keys": sorted(db.execute(f"PRAGMA foreign_key_list('{table}')")),
                "indexes": indexes,
            }
        index_sql = sorted(
            (name, re.sub(r"\s+", " ", sql or ""))
            for name, sql in db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
        )
        return {
            "tables": described,
            "index sql": index_sql,
            "user_version": db.execute("PRAGMA user_version").fetchone()[0],
            "alembic": db.execute("SELECT version_num FROM alembic_version").fetchall(),
        }


def test_a_new_sqlite_file_is_created_as_running_every_revision_would(tmp_path, engines):
    """`open_ledger` makes a new SQLite file straight from schema.py and stamps it at the
    newest revision, without Alembic: the result is the schema the revisions build."""
    from bulletin.ledger import migrate
    from bulletin.tracking import SCHEMA_VERSION

    migrated, fresh = tmp_path / "migrated.db", tmp_path / "fresh.db"
    upgrade(engines(migrated))  # Alembic, every revision from an empty file
    code = (
        "import sys; from bulletin.tracking import Tracker; Tracker(sys.argv[1]).close(); "
        "print('alembic' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(fresh)], capture_output=True, text=True, check=True
    )
    assert run.stdout.strip() == "False"  # made without loading Alembic
    expected, made = _sqlite_schema(migrated), _sqlite_schema(fresh)
    assert made == expected
    assert made["user_version"] == SCHEMA_VERSION
    assert made["alembic"] == [(migrate.HEAD,)]
    assert current_revision(engines(fresh)) == head_revision()
    assert upgrade(engines(fresh)) == migrate.HEAD  # nothing left to run
    assert _sqlite_schema(fresh) == expected


def test_a_file_someone_else_has_just_created_is_not_created_again(tmp_path, engines):
    from bulletin.ledger import migrate

    path = tmp_path / "bulletin.db"
    with Tracker(path) as tracker:
        tracker.suppress("someone@example.org", "asked")
    assert not migrate.create_fresh(engines(path))
    with Tracker(path) as tracker:
        assert tracker.is_suppressed("someone@example.org")


def test_a_wave_1_database_at_user_version_3_is_adopted_and_upgraded(legacy_db, engines):
    """The release before the ledger (tracking.py's migration 2 → 3: open/click tracking)."""
    with sqlite3.connect(legacy_db) as db:
        db.execute("ALTER TABLE sends ADD COLUMN open_tracking INTEGER")
        db.execute("ALTER TABLE sends ADD COLUMN click_tracking INTEGER")
        db.execute("UPDATE sends SET open_tracking = 1, click_tracking = 0 WHERE id = 2")
        db.execute(
            "UPDATE deliveries SET state = 'dropped', error = 'suppressed: spam report' "
            "WHERE id = 64"
        )
        db.execute("PRAGMA user_version = 3")
    with Tracker(legacy_db) as tracker:
        send = tracker.get_send(2)
        assert (send.open_tracking, send.click_tracking) == (1, 0)
        assert [r.cause for r in tracker.delivery_rows(2)][-1] == ("suppressed")
        assert tracker.counts(2).total == 30
    assert counts(engines(legacy_db)) == FIXTURE_COUNTS


@pytest.mark.parametrize("version", [4, 5, 6])
def test_a_file_of_the_sqlite3_tracker_features_is_adopted_with_their_rows(
    legacy_db, engines, version
):
    """Feedback, sign-off and public pages were first built on the sqlite3 Tracker as
    user_version steps 3 → 4, 4 → 5 and 5 → 6: such a file keeps its rows, and gains the
    feature tables it lacks and revision 0003's `cause`."""
    from bulletin.ledger.legacy import MIGRATIONS
    from bulletin.ledger.store import Ledger

    with sqlite3.connect(legacy_db) as db:
        for script in MIGRATIONS[2:version]:
            db.executescript(script)
        db.execute(
            "INSERT INTO feedback (send_id, delivery_id, answer, comment, answered_at) "
            "VALUES (1, 1, 'useful', 'Clear, thank you', '2026-11-29T10:00:00+00:00')"
        )
        if version >= 5:
            db.execute(
                "INSERT INTO approval_events (message, path, fingerprint, kind, approver, route,"
                " audience, audience_definition, text, created_at) VALUES ('m', 'messages/m.md',"
                " 'f', 'approved', 'chief@example.org', 'email link', 3, 'all', 'Hello',"
                " '2026-11-29T10:00:00+00:00')"
            )
        if version >= 6:
            db.execute(
                "INSERT INTO publications (reference, message, send_id, content_hash,"
                " published_at) VALUES ('BR-1', 'm', 1, 'h', '2026-11-29T10:00:00+00:00')"
            )
        db.execute(f"PRAGMA user_version = {version}")
    engine = engines(legacy_db)
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision()
    held = counts(engine)
    assert held["feedback"] == 1 and held["sends"] == FIXTURE_COUNTS["sends"]
    assert held["approval_events"] == (version >= 5)
    assert held["publications"] == (version >= 6)
    from bulletin.ledger.feedback import FeedbackStore

    with Ledger(engine) as ledger:
        assert FeedbackStore(ledger).answer_of(1).comment == "Clear, thank you"
        assert all(r.cause is None for r in ledger.delivery_rows(1))


# --- adopting release 0.1.0's database ----------------------------------------------------


def test_release_0_1_database_is_adopted_and_keeps_every_row(legacy_db, engines):
    before = raw_rows(legacy_db)
    assert {name: len(rows) for name, rows in before.items()} == {
        name: n for name, n in FIXTURE_COUNTS.items() if name in LEGACY_COLUMNS
    }
    engine = engines(legacy_db)
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision()
    assert current_revision(engine) == head_revision()
    assert counts(engine) == FIXTURE_COUNTS
    assert raw_rows(legacy_db) == before
    with sqlite3.connect(legacy_db) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 9  # 0.1.0 now refuses it
        margaret = db.execute(
            "SELECT email, ward, state, opened, clicked FROM deliveries WHERE id = 1"
        ).fetchone()
        forgotten = db.execute(
            "SELECT email, reason, source FROM suppressions WHERE source = 'forget'"
        ).fetchone()
        second = db.execute("SELECT reference, completed_at FROM sends WHERE id = 2").fetchone()
        states = dict(
            db.execute("SELECT state, COUNT(*) FROM deliveries WHERE send_id = 2 GROUP BY state")
        )
    assert margaret == ("margaret.okafor@example.org", "Penge and Cator", "delivered", 1, 1)
    assert forgotten == (None, "forgotten (data-protection request)", "forget")
    assert second == ("BR-2016-07-02", None)
    assert states == {"accepted": 5, "pending": 25}
    # Today's code still opens it: nothing about it changed but the alembic_version table.
    with Tracker(legacy_db) as tracker:
        assert [s.id for s in tracker.sends()] == [1, 2]
        assert tracker.counts(2)["pending"] == 25


def test_adopted_database_differs_from_the_metadata_only_in_constraint_names(legacy_db, engines):
    """Release 0.1.0 left UNIQUE constraints unnamed and allowed NULL in a TEXT primary key."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = engines(legacy_db)
    upgrade(engine)
    with engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), schema.metadata)
    flat = [d for diff in diffs for d in (diff if isinstance(diff, list) else [diff])]
    kinds = sorted((d[0], d[2] if d[0] == "modify_nullable" else d[1].table.name) for d in flat)
    assert kinds == [
        ("add_constraint", "deliveries"),
        ("add_constraint", "events"),
        ("modify_nullable", "purged_sends"),
        ("modify_nullable", "suppressions"),
    ]


def test_schema_1_database_gains_purged_sends_and_is_adopted(legacy_db, engines):
    with sqlite3.connect(legacy_db) as db:
        db.execute("DROP TABLE purged_sends")
        db.execute("PRAGMA user_version = 1")
    engine = engines(legacy_db)
    assert upgrade(engine) == head_revision()
    assert counts(engine) == FIXTURE_COUNTS


def test_a_database_from_a_newer_bulletin_is_refused(legacy_db, engines):
    with sqlite3.connect(legacy_db) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(DatabaseError, match=r"newer bulletin \(schema 99\); upgrade bulletin"):
        upgrade(engines(legacy_db))


def test_an_unknown_alembic_revision_is_refused(ledger_db, engines):
    engine = engines(ledger_db)
    upgrade(engine)
    with transaction(engine) as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff'")
    with pytest.raises(DatabaseError, match=r"newer bulletin \(revision ffff\)"):
        upgrade(engine)


# --- copying between back ends ------------------------------------------------------------


def test_copy_sqlite_to_postgresql_and_back_keeps_every_row(
    legacy_db, postgres_database, tmp_path, engines
):
    source = engines(legacy_db)
    upgrade(source)
    added = add_feature_rows(source)
    expected = all_rows(source)
    server = engines(postgres_database)
    result = copy_database(source, server, chunk=10)
    assert result.rows == {name: n + added.get(name, 0) for name, n in FIXTURE_COUNTS.items()}
    assert result.total == sum(FIXTURE_COUNTS.values()) + sum(added.values())
    assert all_rows(server) == expected
    assert current_revision(server) == head_revision()

    back = engines(tmp_path / "back.db")
    copy_database(server, back)
    assert all_rows(back) == expected
    assert raw_rows(tmp_path / "back.db") == raw_rows(legacy_db)
    event = json.loads(expected["events"][0][7])  # payloads survive byte for byte
    assert event["sg_event_id"] == "proc-1"
    with Tracker(postgres_database) as ledger:  # new rows after the copy get new ids
        from bulletin.ledger.feedback import FeedbackStore

        FeedbackStore(ledger).record(1, 2, "concern", "")
        assert FeedbackStore(ledger).counts(1) == {"useful": 1, "not_useful": 0, "concern": 1}


def add_feature_rows(engine) -> dict[str, int]:
    """A feedback answer, a request and its approval, the send's version, a public page."""
    now = "2026-11-29T10:00:00+00:00"
    event = {
        "message": "eu-referendum",
        "path": "messages/eu-referendum.md",
        "fingerprint": "f",
        "approver": "chief@example.org",
        "route": "email link",
        "audience": 30,
        "audience_definition": "contacts/*.csv",
        "text": "Key messages",
        "created_at": now,
    }
    with transaction(engine) as c:
        c.execute(
            insert(schema.feedback),
            {"send_id": 1, "delivery_id": 1, "answer": "useful", "answered_at": now},
        )
        c.execute(insert(schema.approval_events), {**event, "id": 1, "kind": "request"})
        c.execute(
            insert(schema.approval_events),
            {**event, "id": 2, "kind": "approved", "request_id": 1},
        )
        c.execute(
            insert(schema.send_versions),
            {
                "send_id": 2,
                "fingerprint": "f",
                "audience": 30,
                "after_event": 2,
                "recorded_at": now,
            },
        )
        c.execute(insert(schema.send_approvals), {"send_id": 2, "approval_id": 2})
        c.execute(
            insert(schema.sent_sources),
            {
                "content_hash": "h",
                "message": "eu-referendum",
                "source": b"\x00\xff",
                "created_at": now,
            },
        )
        c.execute(
            insert(schema.publications),
            {
                "reference": "BR-2016-07-02",
                "message": "eu-referendum",
                "send_id": 2,
                "content_hash": "h",
                "published_at": now,
            },
        )
    return {
        "feedback": 1,
        "approval_events": 2,
        "send_versions": 1,
        "send_approvals": 1,
        "sent_sources": 1,
        "publications": 1,
    }


def test_after_a_copy_new_rows_get_new_ids(legacy_db, postgres_database, engines):
    source = engines(legacy_db)
    upgrade(source)
    server = engines(postgres_database)
    copy_database(source, server)
    send_id = add_send(server, recipients=1)
    assert send_id == 3
    with transaction(server, write=False) as connection:
        newest = connection.execute(select(func.max(schema.deliveries.c.id))).scalar_one()
    assert newest == 65


def test_copy_refuses_a_target_that_holds_a_history(legacy_db, ledger_db, engines):
    source = engines(legacy_db)
    upgrade(source)
    target = engines(ledger_db)
    upgrade(target)
    add_send(target)
    with pytest.raises(InputError, match=r"already holds a tracking history .*--force"):
        copy_database(source, target)
    assert counts(target)["sends"] == 1

    result = copy_database(source, target, force=True)
    assert result.replaced == {"sends": 1, "deliveries": 3}
    assert counts(target) == FIXTURE_COUNTS


def test_copy_refuses_a_source_that_is_not_upgraded(legacy_db, tmp_path, engines):
    with pytest.raises(DatabaseError, match="run `bulletin db upgrade` on it first"):
        copy_database(engines(legacy_db), engines(tmp_path / "target.db"))


def test_copy_refuses_to_copy_a_database_onto_itself(legacy_db, engines):
    source = engines(legacy_db)
    upgrade(source)
    with pytest.raises(InputError, match="both the source and the target"):
        copy_database(source, engines(legacy_db))


# --- errors --------------------------------------------------------------------------------


def test_a_wrong_password_is_one_line_without_the_password(postgres_cluster):
    url = postgres_cluster.url("postgres", password="canary-pw-5e1d")
    with pytest.raises(DatabaseError) as caught:
        make_engine(url)
    text = str(caught.value)
    assert "canary-pw-5e1d" not in text
    assert "\n" not in text
    assert "refused the login of user bulletin" in text
    assert "postgresql://bulletin:***@127.0.0.1:" in text
    assert caught.value.exit_code == ExitCode.TRANSPORT


def test_an_unreachable_server_is_one_line_without_the_password():
    port = free_port()  # nothing listens there once the probe socket is closed
    with pytest.raises(DatabaseError) as caught:
        make_engine(f"postgresql://bulletin:canary-pw-5e1d@127.0.0.1:{port}/bulletin")
    text = str(caught.value)
    assert "canary-pw-5e1d" not in text
    assert "\n" not in text
    assert f"cannot reach the server at 127.0.0.1:{port}" in text
    assert caught.value.exit_code == ExitCode.TRANSPORT


def test_a_bad_url_is_a_configuration_error():
    for url, message in [
        ("mysql://user:canary-pw@host/db", "mysql:// is not supported"),
        ("postgresql://user:canary-pw@host:99999/db", "not a valid postgresql:// URL"),
        ("postgresql://user:canary-pw@host", "names no database"),
    ]:
        with pytest.raises(ConfigError, match=message) as caught:
            make_engine(url)
        assert "canary-pw" not in str(caught.value)


def test_importing_the_cli_does_not_load_sqlalchemy(tmp_path):
    code = "import sys, bulletin.cli; print(any(m.startswith('sqlalchemy') for m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
