"""A throw-away PostgreSQL server for tests: Debian's `postgresql` package, no Docker.

Fixtures:

- `postgres_url` (session): `postgresql://…` of an empty database in a cluster made for this
  test session by `initdb` in a temp folder, listening on 127.0.0.1 on a free port (its unix
  socket in the same folder), stopped and deleted at the end, also when tests fail.
- `postgres_database` (per test): the URL of a fresh, empty database of its own, dropped after
  the test, so tests never see each other's rows.
- `ledger_db` (per test, parametrized `sqlite` / `postgresql`): what BULLETIN_DB would hold,
  a SQLite path in `tmp_path` or a fresh PostgreSQL database URL; run a test on both back ends
  by asking for it.
- `migrated_postgres_database` (per test): like `postgres_database`, but already at the newest
  ledger schema (as after `bulletin db upgrade`) and reused: emptied after each test
  (`LedgerDatabases`), which is much faster than creating and migrating a database per test.
  tests/backends.py builds the `backend` fixture on it.

initdb and postgres refuse to run as root; tests and CI do run as root, so then the server
runs as the `postgres` system user (the Debian package creates it) via `runuser`. The binaries
are found on PATH or under /usr/lib/postgresql/*/bin (BULLETIN_PG_BIN overrides). When
PostgreSQL is not installed the tests are skipped with a loud reason, except under CI
(CI=true), where that is a failure: `.ci/run` installs it.

`TemporaryCluster` is plain Python, so bench/ scripts start the same server.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

SUPERUSER = "bulletin"


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: BULLETIN_PG_BIN, PATH, then Debian's newest."""
    override = os.environ.get("BULLETIN_PG_BIN")
    if override:
        return Path(override)
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in path.parent.parent.name.split(".") if p.isdigit())

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    return found[-1].parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TemporaryCluster:
    """`initdb` + `pg_ctl start` in a temp folder; a context manager that always cleans up.

    `durable=False` (the tests' default) turns off fsync for speed; benchmarks pass True so
    PostgreSQL commits as it would in production.
    """

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.durable = durable
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self.root: Path | None = None
        self._started = False
        self._as_postgres = os.geteuid() == 0

    @property
    def data(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{SUPERUSER}:{secret}@127.0.0.1:{self.port}/{database}"

    def __enter__(self) -> TemporaryCluster:
        # Not under pytest's tmp_path: that is private to root, and the server may run as
        # the postgres user.
        self.root = Path(tempfile.mkdtemp(prefix="bulletin-pg-"))
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        assert self.root is not None
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(password_file, "postgres", "postgres")
        self._run(
            "initdb",
            "--pgdata",
            str(self.data),
            "--username",
            SUPERUSER,
            "--pwfile",
            str(password_file),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        password_file.unlink()
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "max_connections": "100",
            "shared_buffers": "64MB",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        options = " ".join(f"-c {key}={value}" for key, value in settings.items())
        for attempt in range(3):  # another process may take the free port first
            self.port = free_port()
            try:
                self._run(
                    "pg_ctl",
                    "start",
                    "--wait",
                    "--timeout=60",
                    "--pgdata",
                    str(self.data),
                    "--log",
                    str(self.root / "server.log"),
                    "-o",
                    f"-p {self.port} {options}",
                )
            except RuntimeError:
                if attempt == 2:
                    raise
                continue
            self._started = True
            return

    def __exit__(self, *exc: object) -> None:
        if self._started:
            with contextlib.suppress(RuntimeError):
                self._run(
                    "pg_ctl", "stop", "--wait", "--mode=immediate", "--pgdata", str(self.data)
                )
            self._started = False
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def log_tail(self, lines: int = 20) -> str:
        log = self.root / "server.log" if self.root else None
        if log is None or not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n"
                f"{self.log_tail()}"
            )

    def create_database(self, name: str) -> str:
        """CREATE DATABASE name; returns its URL."""
        self.execute_autocommit(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute_autocommit(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def execute_autocommit(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as c:
            c.execute(sql)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}")
    pytest.skip(f"POSTGRESQL TESTS NOT RUN: {reason} (apt-get install postgresql)")


@pytest.fixture(scope="session")
def postgres_cluster():
    """The session's throw-away PostgreSQL cluster (a `TemporaryCluster`)."""
    bin_dir = find_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        _unavailable("no initdb on PATH or under /usr/lib/postgresql/*/bin")
    if os.geteuid() == 0 and not _has_postgres_user():
        _unavailable("running as root and there is no `postgres` user to run the server as")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg package is not installed")
    with TemporaryCluster(bin_dir) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster: TemporaryCluster) -> str:
    """URL of an empty database, shared by the whole session."""
    return postgres_cluster.create_database("bulletin")


_numbers = itertools.count(1)


@pytest.fixture
def postgres_database(postgres_cluster: TemporaryCluster):
    """URL of a fresh empty database for this test alone, dropped afterwards."""
    name = f"test_{os.getpid()}_{next(_numbers)}"
    url = postgres_cluster.create_database(name)
    try:
        yield url
    finally:
        postgres_cluster.drop_database(name)


class LedgerDatabases:
    """Databases at the newest ledger schema, one test at a time.

    The first is a copy of a template database migrated once (`bulletin db upgrade`). After a
    test its database is emptied (its connections ended, every row deleted, the id sequences
    restarted, so the next test's first send is #1 again) and handed to the next test: that
    takes milliseconds, CREATE DATABASE a tenth of a second or more. A database that will not
    empty is dropped and the next test gets a new copy.
    """

    def __init__(self, cluster: TemporaryCluster) -> None:
        from bulletin.ledger.engine import make_engine
        from bulletin.ledger.migrate import upgrade

        self.cluster = cluster
        self.template = f"template_{os.getpid()}"
        self.free: list[str] = []
        engine = make_engine(cluster.create_database(self.template))
        try:
            upgrade(engine)
        finally:
            engine.dispose()  # CREATE DATABASE … TEMPLATE needs it without connections

    def take(self) -> str:
        """The name of an empty migrated database for one test."""
        if self.free:
            return self.free.pop()
        name = f"ledger_{os.getpid()}_{next(_numbers)}"
        self.cluster.execute_autocommit(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        return name

    def give_back(self, name: str) -> None:
        try:
            self._empty(name)
        except Exception:  # whatever the test left, a new copy is clean
            self.cluster.drop_database(name)
        else:
            self.free.append(name)

    def _empty(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.cluster.url(name), autocommit=True, connect_timeout=10) as c:
            c.execute(  # processes a test left behind, and their locks
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            tables = c.execute(
                "SELECT tablename FROM pg_tables"
                " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            ).fetchall()
            sequences = c.execute(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
            ).fetchall()
            with c.transaction():
                c.execute("SET LOCAL lock_timeout = '10s'")
                c.execute("SET LOCAL session_replication_role = replica")  # no FK order
                for (table,) in tables:
                    c.execute(f'DELETE FROM "{table}"')
                for (sequence,) in sequences:
                    c.execute(f'ALTER SEQUENCE "{sequence}" RESTART')


@pytest.fixture(scope="session")
def ledger_databases(postgres_cluster: TemporaryCluster) -> LedgerDatabases:
    return LedgerDatabases(postgres_cluster)


@pytest.fixture
def migrated_postgres_database(postgres_cluster: TemporaryCluster, ledger_databases):
    """URL of an empty database at the newest ledger schema, for this test alone."""
    name = ledger_databases.take()
    try:
        yield postgres_cluster.url(name)
    finally:
        ledger_databases.give_back(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_db(request, tmp_path: Path) -> str | Path:
    """BULLETIN_DB for one back end: a SQLite file path, or a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        return tmp_path / "bulletin.db"
    return request.getfixturevalue("postgres_database")


def _has_postgres_user() -> bool:
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None
