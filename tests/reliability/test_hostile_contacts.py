"""Contact lists as spreadsheets, editors and attackers make them: the loader never crashes.

For every file it either loads the rows or reports each problem as `FILE:LINE: what is wrong`
(LINE being the physical line the record starts on). The corpus is tests/data/contacts (rebuilt
by tests/data/make_corpus.py); huge fields and 1 MB lines are made here; hypothesis supplies
random bytes and random rows.
"""

from __future__ import annotations

import csv
import io
import re
import shutil

import pytest
from email_validator import validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulletin.contacts import load_contacts
from bulletin.fields import has_line_break

PROBLEM = re.compile(r"^(?P<file>[^:]+)(?::(?P<line>\d+))?: (?P<text>.+)$", re.DOTALL)
HEADER = "email,first_name,last_name,ward\n"

# file → (addresses loaded, [(line, words the problem on that line contains)])
CORPUS = {
    "blank-lines-only.csv": (set(), [(None, "empty file")]),
    "duplicate-headers.csv": (set(), [(1, "both mean email")]),
    "emoji.csv": ({"emoji@example.org"}, []),
    "empty.csv": (set(), [(None, "empty file")]),
    "formulas.csv": ({"formula.one@example.org"}, [(2, "fields but the header has 4")]),
    "header-injection-address.csv": (
        set(),
        [(2, "email contains a line break"), (4, "stray comma"), (5, "not a valid email")],
    ),
    "header-only.csv": (set(), []),
    "html-in-fields.csv": ({"xss@example.org"}, []),
    "idn-domains.csv": (
        {"volunteer@xn--bcher-kva.example.org"},
        [(3, "Internationalized characters before the @-sign are not supported")],
    ),
    "line-breaks-in-names.csv": (
        {"after@example.org"},
        [(line, "first_name contains a line break") for line in (2, 4, 5, 6)],
    ),
    "long-addresses.csv": (
        {f"{'a' * 64}@example.org", f"{'b' * 65}@example.org"},  # email-validator allows 65
        [(4, "not a valid email")],
    ),
    "missing-header.csv": (set(), [(1, "no email column")]),
    "nul-bytes.csv": ({"ada@example.org", "bo@example.org"}, [(2, "NUL byte")]),
    "ragged-rows.csv": ({"bo@example.org"}, [(2, "6 fields but the header has 4")]),
    "random-bytes.csv": (
        set(),
        [(1, "NUL byte"), (8, "NUL byte"), (14, "NUL byte"), (1, "no email column")],
    ),
    "rtl-and-combining.csv": ({"rtl@example.org", "zalgo@example.org"}, []),
    "shift-jis.csv": ({"kenji@example.org"}, []),  # read as Windows-1252: names garbled
    "unterminated-quote.csv": (set(), [(2, "first_name contains a line break")]),
    "utf16-with-bom.csv": (
        set(),
        [(1, "NUL byte"), (2, "NUL byte"), (3, "NUL byte"), (1, "no email column")],
    ),
    "windows-1252.csv": ({"zoe@example.org", "leo@example.com"}, []),
}


def parsed(problem) -> tuple[str, int | None, str]:
    match = PROBLEM.match(str(problem))
    assert match, f"not FILE:LINE: text — {problem}"
    line = match.group("line")
    return match.group("file"), int(line) if line else None, match.group("text")


def physical_lines(data: bytes) -> int:
    """Lines as an editor counts them: ended by CRLF, CR or LF."""
    return len(re.findall(rb"\r\n|\r|\n", data)) + 1


def assert_sane(result, shown: str, physical_lines: int) -> None:
    """Every problem is located in this file; every contact is safe to put in a header."""
    for problem in result.problems + result.duplicates:
        file, line, _text = parsed(problem)
        assert file == shown
        assert line is None or 1 <= line <= max(physical_lines, 1)
    for contact in result.contacts:
        assert not has_line_break(contact.email + contact.name)
        if contact.email:
            assert contact.email.isascii()
            assert validate_email(contact.email, check_deliverability=False).normalized


def test_the_corpus_covers_every_file(data_dir):
    assert {p.name for p in (data_dir / "contacts").iterdir()} == set(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_bad_contact_file_loads_or_reports_file_and_line(data_dir, tmp_path, name):
    path = tmp_path / name
    shutil.copyfile(data_dir / "contacts" / name, path)
    result = load_contacts([path], tmp_path)
    emails, problems = CORPUS[name]
    assert {c.email for c in result.contacts} == emails
    found = [parsed(p) for p in result.problems]
    assert len(found) == len(problems), [str(p) for p in result.problems]
    for (file, line, text), (want_line, words) in zip(found, problems, strict=True):
        assert (file, line) == (name, want_line) and words in text
    assert_sane(result, name, physical_lines(path.read_bytes()))


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_contacts_check_never_shows_a_traceback(data_dir, workdir, cli, name):
    shutil.copyfile(data_dir / "contacts" / name, workdir / "contacts" / name)
    _emails, problems = CORPUS[name]
    result = cli.runner.invoke(
        __import__("bulletin.cli", fromlist=["app"]).app,
        ["contacts", "check", f"contacts/{name}"],
        catch_exceptions=False,
    )
    assert result.exit_code == (1 if problems else 0), result.output
    for line in result.stderr.splitlines():
        assert line.startswith((f"contacts/{name}", "Error: ")), line


@pytest.mark.parametrize(
    ("size", "words"),
    [(200_000, "field larger than field limit"), (1_100_000, "field larger than field limit")],
    ids=["200-KB-field", "1-MB-line"],
)
def test_huge_fields_and_megabyte_lines_are_reported_on_their_line(tmp_path, size, words):
    path = tmp_path / "huge.csv"
    path.write_text(
        HEADER
        + "ada@example.org,Ada,Okafor,Penge\n"
        + f"big@example.org,{'x' * size},Okafor,Penge\n"
        + "bo@example.org,Bo,Li,Penge\n",
        encoding="utf-8",
    )
    result = load_contacts([path], tmp_path)
    assert [(parsed(p)[1], words in parsed(p)[2]) for p in result.problems] == [(3, True)]
    assert {c.email for c in result.contacts} == {"ada@example.org", "bo@example.org"}


def test_a_big_field_under_the_limit_loads(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text(HEADER + f"big@example.org,{'y' * 100_000},Okafor,Penge\n", encoding="utf-8")
    result = load_contacts([path], tmp_path)
    assert not result.problems and len(result.contacts[0].first_name) == 100_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=3000))
def test_random_bytes_never_crash_the_loader(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("bytes")
    path = folder / "random.csv"
    path.write_bytes(data)
    result = load_contacts([path], folder)
    assert_sane(result, "random.csv", physical_lines(data))


cells = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40
) | st.sampled_from(
    [
        "=1+2",
        "@SUM(A1)",
        "ada@example.org",
        "ADA@EXAMPLE.ORG",
        "x@bücher.example.org",
        "\u202egro.elpmaxe@evil",
        "a\u2028b",
        '"quoted, with comma"',
        "line\nbreak",
        "",
    ]
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=6), max_size=12))
def test_random_rows_load_or_are_reported_on_the_line_they_start(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("rows")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["email", "first_name", "last_name", "ward"])
    starts = []
    for row in rows:
        starts.append(physical_lines(out.getvalue().encode()))
        writer.writerow(row)
    (folder / "rows.csv").write_bytes(out.getvalue().encode("utf-8"))
    result = load_contacts([folder / "rows.csv"], folder)
    assert_sane(result, "rows.csv", physical_lines(out.getvalue().encode()))
    located = [parsed(p) for p in result.problems + result.duplicates]
    lines = re.split(r"\r\n|\r|\n", out.getvalue())
    nul = {line for _, line, text in located if "NUL byte" in text}
    assert all("\x00" in lines[line - 1] for line in nul)  # the line holding the NUL
    reported = {line for _, line, text in located if "NUL byte" not in text}
    loaded = {c.line for c in result.contacts}
    assert reported | loaded <= set(starts)  # every other line number is where a record starts
    assert not reported & loaded
