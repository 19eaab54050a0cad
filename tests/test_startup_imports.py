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
    modules_after(
        f"from bulletin.ledger.store import open_ledger\nopen_ledger({str(db)!r})", tmp_path
    )
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
    """Alembic comes in when there is something to migrate (an empty file here)."""
    db = tmp_path / "bulletin.db"
    loaded = modules_after(
        "from bulletin.ledger import migrate\n"
        "from bulletin.ledger.store import open_ledger\n"
        f"open_ledger({str(db)!r})\n"
        f"from bulletin.ledger.engine import make_engine\n"
        f"assert migrate.current_revision(make_engine({str(db)!r})) == migrate.HEAD\n",
        tmp_path,
    )
    assert "alembic" in loaded


def test_check_and_preview_import_no_database_library(tmp_path):
    loaded = modules_after("import bulletin.check, bulletin.preview, bulletin.publish", tmp_path)
    assert "sqlalchemy" not in loaded and "alembic" not in loaded
