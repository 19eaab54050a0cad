"""`bulletin --help` stays fast: heavy libraries are imported inside the commands that need them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("weasyprint", "sendgrid", "markdown", "css_inline", "starlette", "uvicorn", "watchfiles")


def run_python(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_importing_the_cli_loads_no_heavy_library(tmp_path):
    code = (
        "import json, sys\n"
        "import bulletin.cli\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    result = run_python("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("args", [["--help"], ["preview", "--help"], ["contacts", "--help"]])
def test_help_loads_no_heavy_library(tmp_path, args):
    code = (
        "import json, sys\n"
        "from bulletin.cli import app\n"
        "try:\n"
        f"    app({args!r}, prog_name='bulletin')\n"
        "except SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    result = run_python("-c", code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_python_m_bulletin_help(tmp_path):
    result = run_python("-m", "bulletin", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    for name in ("init", "new", "check", "contacts", "preview", "print"):
        assert name in result.stdout
    assert result.stderr == ""


def test_no_arguments_shows_help_not_a_traceback(tmp_path):
    result = run_python("-m", "bulletin", cwd=tmp_path)
    assert "Usage:" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
