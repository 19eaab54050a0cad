"""Start-up stays light where the command does not need a library (issue 19: `status` ≤ 1 s)."""

from __future__ import annotations

import json
import subprocess
import sys


def modules_after(code: str, cwd) -> list[str]:
    script = (
        "import json, sys\n"
        f"{code}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_opening_a_ledger_at_the_newest_schema_imports_no_alembic(tmp_path):
    db = tmp_path / "bulletin.db"
    created = modules_after(
        f"from bulletin.ledger.store import open_ledger\nopen_ledger({str(db)!r})", tmp_path
    )
    assert "alembic" not in created  # a new file is made straight at the newest schema
    assert "sqlalchemy" in created
    loaded = modules_after(
        "from bulletin.ledger.store import open_ledger\n"
        f"ledger = open_ledger({str(db)!r})\n"
        "from bulletin import status\n"
        "from bulletin.approval import send_record\n",
        tmp_path,
    )
    assert "sqlalchemy" in loaded
    assert "alembic" not in loaded
    assert "markdown" not in loaded and "css_inline" not in loaded  # no check/render stack


def test_an_old_ledger_is_still_upgraded(tmp_path):
    """Alembic comes in when there is something to migrate (a file at an older revision)."""
    db = tmp_path / "bulletin.db"
    modules_after(
        "from bulletin.ledger.engine import make_engine\n"
        "from bulletin.ledger.migrate import upgrade\n"
        f"upgrade(make_engine({str(db)!r}), '0004')\n",
        tmp_path,
    )
    loaded = modules_after(
        "import sqlite3\n"
        "from bulletin.ledger import migrate\n"
        "from bulletin.ledger.store import open_ledger\n"
        f"open_ledger({str(db)!r}).close()\n"
        f"at = sqlite3.connect({str(db)!r}).execute('SELECT * FROM alembic_version').fetchall()\n"
        "assert at == [(migrate.HEAD,)], at\n",
        tmp_path,
    )
    assert "alembic" in loaded


def test_a_sqlite_send_imports_no_postgresql_dialect(tmp_path):
    db = tmp_path / "bulletin.db"
    loaded = modules_after(
        "from bulletin.ledger.store import open_ledger\n"
        "from bulletin.ledger.publications import *\n"
        "from bulletin.approval import send_record\n"
        f"ledger = open_ledger({str(db)!r})\n"
        "ledger.suppress('someone@example.org', 'asked')\n"
        "import sys\n"
        "assert 'sqlalchemy.dialects.postgresql' not in sys.modules\n",
        tmp_path,
    )
    assert "psycopg" not in loaded


def test_check_and_preview_import_no_database_library(tmp_path):
    loaded = modules_after("import bulletin.check, bulletin.preview, bulletin.publish", tmp_path)
    assert "sqlalchemy" not in loaded and "alembic" not in loaded
