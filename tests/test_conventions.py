"""Issue 16: what people expect of a mature CLI — --version, -h, tables at 80 columns, one
stream rule, `-` for stdout, no tracebacks, message-name suggestions, `send --test` wording."""

from __future__ import annotations

import email
import json
import os
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_docs import COMMANDS

from bulletin import __version__
from bulletin.names import missing_message, nearest
from bulletin.tables import Column, choose_columns, local_time, output_width, render_table

# --- conventions -----------------------------------------------------------------------------


def test_version(cli):
    assert cli("--version").stdout.strip() == f"bulletin {__version__}"


def test_bare_bulletin_prints_help_on_stdout_and_exits_0(cli):
    result = cli()
    assert result.stdout.startswith("Usage: ")
    assert "Commands:" in result.stdout and not result.stderr


@pytest.mark.parametrize("group", ["contacts", "suppress", "events"])
def test_a_bare_group_prints_its_help(cli, group):
    assert f" {group} " in cli(group).stdout.splitlines()[0]


def test_shell_completion_is_offered(cli):
    help_text = cli("--help").stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_dash_h_is_help_and_help_has_no_python_types_or_cut_lines(cli, path, command):
    result = cli(*path, "-h")
    assert result.stdout == cli(*path, "--help").stdout
    assert not re.search(r"<[a-z][a-z_\[\] ]*>", result.stdout), result.stdout  # <list[str]>
    assert "…" not in result.stdout
    if "Commands:" in result.stdout:
        assert "..." not in result.stdout.split("Commands:")[1], result.stdout


# --- tables ----------------------------------------------------------------------------------


def test_columns_are_dropped_least_important_first_until_the_rest_fit():
    columns = [Column("email"), Column("name", 1), Column("note", 2)]
    rows = [["a.long.address@example.org", "Ada Okafor", "anything at all"]]
    assert [i for i, _ in choose_columns(columns, rows, 200)] == [0, 1, 2]
    assert [i for i, _ in choose_columns(columns, rows, 40)] == [0, 1]
    assert [i for i, _ in choose_columns(columns, rows, 10)] == [0]  # priority 0 always kept


def test_room_goes_to_the_important_columns_first():
    columns = [Column("a"), Column("b", 1)]
    rows = [["one two three", "four five six"]]
    assert choose_columns(columns, rows, 20) == [(0, 13), (1, 5)]


def test_render_table_wraps_instead_of_cutting():
    columns = [Column("email"), Column("reason", 1)]
    rows = [["someone@example.org", "asked by phone on Tuesday afternoon, twice"]]
    text = render_table(columns, rows, 40)
    assert "…" not in text and max(map(len, text.splitlines())) <= 40
    assert "someone@example.org" in text
    assert " ".join(text.split()).count("Tuesday afternoon,") == 1


def test_local_time_names_the_zone():
    stamp = "2016-07-04T06:30:00+00:00"
    assert local_time(stamp, UTC) == "2016-07-04 06:30 UTC"
    assert local_time(stamp, timezone(timedelta(hours=1), "BST")) == "2016-07-04 07:30 BST"
    assert local_time("", UTC) == ""


def test_output_width():
    assert output_width({"COLUMNS": "80"}) == 80
    assert output_width({}, isatty=False) >= 120


def assert_fits_80(text: str) -> None:
    assert "…" not in text, text
    assert max(map(len, text.splitlines())) <= 80, text


def test_tables_read_at_80_columns(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    long = "someone.with.a.rather.long.address@example.org"
    cli("suppress", "add", long, "--reason", "asked by phone on Tuesday afternoon")
    env = {"COLUMNS": "80"}
    status = cli("status", env=env).stdout
    assert_fits_80(status)
    assert "eu-referendum" in status and "recipients" in status
    assert datetime.now().astimezone().tzname() in status
    suppressed = cli("suppress", "list", env=env).stdout
    assert_fits_80(suppressed)
    assert long in suppressed and "1 suppressed address(es)" in suppressed
    contacts = cli("contacts", "list", env=env).stdout
    assert_fits_80(contacts)
    assert "margaret.okafor@example.org" in contacts


# --- streams and `-` -------------------------------------------------------------------------


def test_wrote_goes_to_stdout_for_every_command(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    assert cli("preview", "eu-referendum", "-o", "p.html").stdout.startswith("Wrote p.html")
    assert cli("status", "1", "-o", "d.csv").stdout.startswith("Wrote d.csv")
    assert cli("report", "1", "-o", "r.html").stdout.startswith("Wrote r.html")
    assert cli("print", "eu-referendum", "--notice", "-o", "n.pdf").stdout.startswith("Wrote n.pdf")


def test_dash_means_stdout(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    csv_text = cli("status", "1", "-o", "-").stdout
    assert csv_text.startswith("send_id,email,") and not (workdir / "-").exists()
    assert cli("report", "1", "-o", "-").stdout.lstrip().lower().startswith("<!doctype html")
    assert cli("print", "eu-referendum", "--notice", "-o", "-").stdout_bytes.startswith(b"%PDF")
    assert cli("preview", "eu-referendum", "-o", "-").stdout.lstrip().startswith("<!")
    assert not (workdir / "-").exists()


def test_status_csv_is_kept_as_the_old_spelling_of_dash_o(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    assert cli("status", "--csv", "old.csv").stdout.startswith("Wrote old.csv")
    assert (workdir / "old.csv").read_text().startswith("send_id,email,")
    cli("status", "--csv", "a.csv", "-o", "b.csv", expect=2)
    both = cli("status", "1", "--json", "-o", "both.csv")
    assert json.loads(both.stdout)["sends"][0]["id"] == 1
    assert both.stderr.startswith("Wrote both.csv")
    cli("status", "1", "--json", "-o", "-", expect=2)


# --- no tracebacks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("preview", "eu-referendum"),
        ("print", "eu-referendum", "--notice"),
        ("report", "1"),
        ("status", "1"),
    ],
)
def test_an_unwritable_output_is_one_line(workdir, cli, args):
    cli("send", "eu-referendum", "--yes")
    result = cli(*args, "-o", "/nonexistent/x", expect=1)
    assert result.stderr.strip().splitlines() == [
        "Error: cannot write /nonexistent/x: No such file or directory; choose another -o path"
    ]


def test_init_on_a_file_is_one_line(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    Path("afile").write_text("x")
    result = cli("init", "afile", expect=1)
    assert result.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'afile'}: is a file, not a folder; choose a folder name for "
        "bulletin init"
    ]


POISON = """
import sys
class Poison:
    def find_spec(self, name, path=None, target=None):
        if name == "weasyprint":
            raise OSError("cannot load library 'libpango-1.0-0': libpango-1.0-0: "
                          "cannot open shared object file: No such file or directory")
sys.meta_path.insert(0, Poison())
sys.argv = ["bulletin", "preview", "eu-referendum", "--format", "pdf", "-o", "x.pdf"]
from bulletin.cli import main
main()
"""


def test_a_missing_pango_says_what_to_install(workdir):
    result = subprocess.run(
        [sys.executable, "-c", POISON], capture_output=True, text=True, cwd=workdir, timeout=60
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Pango" in lines[0] and "apt install libpango-1.0-0" in lines[0]
    assert not (workdir / "x.pdf").exists()


# --- message names and working folders -------------------------------------------------------


def test_nearest_name():
    assert nearest("street-safety-jul", ["eu-referendum", "street-safety-july"]) == (
        "street-safety-july"
    )
    assert nearest("zzz", ["eu-referendum"]) is None


def test_missing_message_lists_what_exists(tmp_path):
    (tmp_path / "messages").mkdir()
    (tmp_path / "messages" / "eu-referendum.md").write_text("x")
    line = missing_message("messages/x.md", "x", tmp_path)
    assert "Messages here: eu-referendum" in line and "bulletin new x" in line


def test_a_typo_suggests_the_nearest_message(workdir, cli):
    cli("new", "street-safety-july")
    result = cli("check", "street-safety-jul", expect=1)
    assert "did you mean street-safety-july?" in result.stderr
    assert "eu-referendum" in result.stderr and "bulletin new" not in result.stderr


def test_name_dot_md_without_messages(workdir, cli):
    assert "OK" in cli("check", "eu-referendum.md").stdout


@pytest.mark.parametrize(
    "args",
    [
        ("check", "eu-referendum"),
        ("new", "x"),
        ("preview", "eu-referendum"),
        ("send", "eu-referendum", "--yes"),
        ("status",),
        ("suppress", "list"),
        ("suppress", "add", "a@example.org"),
        ("contacts", "list"),
        ("run",),
        ("forget", "a@example.org"),
        ("purge", "--older-than", "400d"),
        ("events", "import", "x.json"),
    ],
)
def test_outside_a_working_folder_says_so_and_creates_nothing(tmp_path, monkeypatch, cli, args):
    monkeypatch.chdir(tmp_path)
    result = cli(*args, expect=1)
    assert "is not a bulletin working folder" in result.stderr
    assert "bulletin init" in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- bulletin new, send --test, progress -----------------------------------------------------


def test_new_makes_unique_references_and_title_case_subjects(workdir, cli):
    cli("new", "street-safety-july")
    cli("new", "street-safety-aug")
    cli("new", "asb-update")
    texts = [
        (workdir / "messages" / f"{n}.md").read_text()
        for n in ("street-safety-july", "street-safety-aug", "asb-update")
    ]
    today = f"BR-{date.today():%Y-%m-%d}"
    assert [t.split("reference: ")[1].split()[0] for t in texts] == [
        today,
        f"{today}-2",
        f"{today}-3",
    ]
    assert 'subject: "Street Safety July"' in texts[0]
    assert 'subject: "Asb Update"' in texts[2]


def test_send_test_on_the_outbox_says_where_and_that_nothing_was_emailed(workdir, cli):
    result = cli("send", "eu-referendum", "--test", "me@example.org")
    path = workdir / "outbox" / "test-0000000.eml"
    assert f"written to {path}" in result.stdout
    assert "nothing was emailed" in result.stdout
    message = email.message_from_bytes(path.read_bytes())
    assert message["To"] == "me@example.org"
    assert message["Subject"].startswith("[TEST] ")


def test_progress_without_a_terminal_counts_emails(workdir, cli):
    result = cli("send", "eu-referendum", "--yes")
    assert "sent 34/34 emails" in result.stderr.replace(os.linesep, "\n")
