"""The package installs and renders the example with the lowest versions pyproject.toml allows.

pip has no "lowest resolution" switch, so every `>=` lower bound becomes a `==` constraint
(issue 12: `weasyprint>=62` admitted 62.3, which lacks the tinyhtml5 bulletin imports).
Slow and needs the package index: run with `-m slow`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def lower_bounds() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = []
    for requirement in project["dependencies"]:
        # extras (`psycopg[binary]`) stay out: a constraints file names the package alone
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)", requirement)
        assert match, f"{requirement!r} has no lower bound"
        pins.append(f"{match.group(1)}=={match.group(2)}")
    return pins


def test_every_dependency_has_a_lower_bound():
    assert len(lower_bounds()) >= 15


@pytest.mark.slow
def test_the_lowest_allowed_versions_render_the_example(tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("builds a fresh venv from the package index: run with -m slow")
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    (tmp_path / "constraints.txt").write_text("\n".join(lower_bounds()) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-c", tmp_path / "constraints.txt", ROOT],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    bulletin = [python, "-m", "bulletin"]
    work = tmp_path / "work"
    for args in (
        ["init", "--example", str(work)],
        ["check", "eu-referendum"],
        ["preview", "eu-referendum", "--format", "html", "-o", "example.html"],
        ["preview", "eu-referendum", "--format", "pdf", "-o", "example.pdf"],
        ["preview", "eu-referendum", "--format", "eml", "-o", "example.eml"],
    ):
        done = subprocess.run(
            [*bulletin, *args],
            cwd=tmp_path if args[0] == "init" else work,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, (args, done.stderr[-3000:])
    assert (work / "example.pdf").read_bytes().startswith(b"%PDF")
    assert "Crimestoppers" in (work / "example.html").read_text(encoding="utf-8")
    assert sys.version_info >= (3, 11)
