"""A message file: front matter → `Message`, every problem located by line."""

from __future__ import annotations

import textwrap
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bulletin.errors import InputError
from bulletin.message import (
    Address,
    load_message,
    parse_address,
    parse_send_at,
    resolve_path,
    scaffold,
)

LONDON = ZoneInfo("Europe/London")


def write(folder: Path, text: str, name: str = "m.md") -> Path:
    path = folder / "messages" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(folder: Path, text: str, **defaults: str):
    return load_message(write(folder, text), folder, **defaults)


def test_the_example_message_loads(workdir):
    message, problems = load_message(workdir / "messages" / "eu-referendum.md", workdir)
    assert problems == []
    assert message.shown == "messages/eu-referendum.md"
    assert message.name == "eu-referendum"
    assert message.subject == "Key messages from the Borough Commander: we stand together"
    assert message.sender == Address("", "bromley.neighbourhoods@example.org")  # check names it
    assert str(message.reply_to) == "Bromley Safer Neighbourhoods <bromley.snt@example.org>"
    assert message.preheader.startswith("After the EU Referendum")
    assert message.reference == "BR-2016-07-01"
    assert message.category == "key-messages"
    assert message.audience == {}
    assert message.contacts == ("contacts/*.csv",)
    assert message.send_at is None
    assert message.body.startswith('Dear {{ first_name or "Co-ordinator" }},')
    assert message.body_line == 16
    assert message.notice.headline == "We stand together against hate crime"
    assert len(message.content_hash) == 64


def test_every_key_is_read(tmp_path):
    message, problems = load(
        tmp_path,
        """\
        ---
        subject: Street safety in {{ ward }}
        from: Bromley Police <police@example.org>
        reply_to: snt@example.org
        preheader: "  Read this  "
        audience:
          Ward: [Penge and Cator, Bickley]
          role: coordinator
        contacts: [lists/a.csv, "lists/*.csv"]
        send_at: 2016-07-04T07:30
        category: street-safety
        reference: BR-2016-07-04
        ---

        Body
        """,
    )
    assert problems == []
    assert message.sender == Address("Bromley Police", "police@example.org")
    assert message.reply_to == Address("", "snt@example.org")
    assert message.preheader == "Read this"
    assert message.audience == {"Ward": ("Penge and Cator", "Bickley"), "role": ("coordinator",)}
    assert message.contacts == ("lists/a.csv", "lists/*.csv")
    assert message.send_at == datetime(2016, 7, 4, 7, 30, tzinfo=LONDON)
    assert message.reference == "BR-2016-07-04"
    assert message.body == "Body\n"
    assert message.body_line == 15


def test_key_lines_are_the_lines_in_the_file(tmp_path):
    message, _ = load(
        tmp_path,
        """\
        ---
        subject: Hello
        # a comment
        from: a@example.org

        audience:
          ward: [Penge]
        ---
        Body
        """,
    )
    assert message.line_of("subject") == 2
    assert message.line_of("from") == 4
    assert message.line_of("audience") == 6
    assert message.line_of("send_at") is None
    assert message.body_line == 9


def test_defaults_come_from_settings(tmp_path):
    message, problems = load(
        tmp_path,
        "---\nsubject: Hi\n---\nBody\n",
        default_from="Bromley <from@example.org>",
        default_reply_to="reply@example.org",
    )
    assert problems == []
    assert message.sender == Address("Bromley", "from@example.org")
    assert message.reply_to == Address("", "reply@example.org")
    assert message.reference == "M"  # default: the file name


def test_a_bad_default_sender_says_it_came_from_env(tmp_path):
    _, problems = load(tmp_path, "---\nsubject: Hi\n---\nBody\n", default_from="not an address")
    assert [str(p) for p in problems] == [
        "messages/m.md: from: 'not an address' has no email address; "
        'write "Name <name@example.org>" (from .env)'
    ]


def test_crlf_and_bom_files_load(tmp_path):
    path = tmp_path / "messages" / "m.md"
    path.parent.mkdir()
    path.write_bytes(b"\xef\xbb\xbf---\r\nsubject: Hi\r\nfrom: a@example.org\r\n---\r\nBody\r\n")
    message, problems = load_message(path, tmp_path)
    assert problems == []
    assert (message.subject, message.body, message.body_line) == ("Hi", "Body\n", 5)


def test_a_missing_message_says_how_to_create_it(tmp_path):
    with pytest.raises(InputError, match=r"messages/nope.md: no such message; .*bulletin new nope"):
        load_message(tmp_path / "messages" / "nope.md", tmp_path)


def test_a_message_that_is_not_utf8(tmp_path):
    path = tmp_path / "m.md"
    path.write_bytes("---\nsubject: Zoë\n---\n".encode("cp1252"))
    with pytest.raises(InputError, match="not UTF-8"):
        load_message(path, tmp_path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2016-07-04T07:30", datetime(2016, 7, 4, 7, 30, tzinfo=LONDON)),
        ("2016-12-04 07:30:15", datetime(2016, 12, 4, 7, 30, 15, tzinfo=LONDON)),
        ("2016-07-04T07:30+00:00", datetime.fromisoformat("2016-07-04T07:30+00:00")),
        ("2016-07-04", datetime(2016, 7, 4, tzinfo=LONDON)),
        (date(2016, 7, 4), datetime(2016, 7, 4, tzinfo=LONDON)),
        (datetime(2016, 7, 4, 7, 30), datetime(2016, 7, 4, 7, 30, tzinfo=LONDON)),
    ],
)
def test_send_at(value, expected):
    moment, error = parse_send_at(value)
    assert error is None
    assert moment == expected
    assert moment.utcoffset() == expected.utcoffset()


def test_naive_send_at_is_london_time_summer_and_winter():
    summer, _ = parse_send_at("2016-07-04T07:30")
    winter, _ = parse_send_at("2016-12-05T07:30")
    assert summer.utcoffset().total_seconds() == 3600
    assert winter.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("value", ["next tuesday", "2016-13-45T07:30", "04/07/2016", 20160704])
def test_bad_send_at(value):
    moment, error = parse_send_at(value)
    assert moment is None
    assert error.startswith("send_at")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bromley Police <police@example.org>", Address("Bromley Police", "police@example.org")),
        (
            '"Police, Bromley" <police@example.org>',
            Address("Police, Bromley", "police@example.org"),
        ),
        ("police@example.org", Address("", "police@example.org")),
        ("Zoë <zoe@EXAMPLE.org>", Address("Zoë", "zoe@example.org")),
    ],
)
def test_addresses(value, expected):
    assert parse_address(value, "from") == (expected, None)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", "from must be text"),
        (42, "from must be text"),
        ("Bromley Police", "has no email address"),
        ("Bromley <police@example>", "is not a valid email address"),
        ("Bromley <police@example.org>\nBcc: x@example.com", "must be on one line"),
        ("Bromley <police@example.org>\r", "must be on one line"),
    ],
)
def test_bad_addresses(value, error):
    address, message = parse_address(value, "from")
    assert address is None
    assert error in message


def test_address_str_quotes_when_needed():
    assert str(Address("Police, Bromley", "p@example.org")) == '"Police, Bromley" <p@example.org>'
    assert str(Address("", "p@example.org")) == "p@example.org"


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("eu-referendum", "messages/eu-referendum.md"),
        ("messages/eu-referendum.md", "messages/eu-referendum.md"),
        ("drafts/july.md", "drafts/july.md"),
        ("update-v1.2", "messages/update-v1.2.md"),
    ],
)
def test_resolve_path(tmp_path, argument, expected):
    assert resolve_path(argument, tmp_path) == tmp_path / expected


def test_resolve_path_keeps_absolute_paths(tmp_path):
    assert resolve_path(str(tmp_path / "x.md"), Path("/elsewhere")) == tmp_path / "x.md"


def test_scaffold_writes_a_message_and_refuses_to_overwrite(tmp_path):
    path = scaffold("street-safety", tmp_path, date(2016, 7, 4))
    assert path == tmp_path / "messages" / "street-safety.md"
    message, problems = load_message(path, tmp_path, default_from="Police <p@example.org>")
    assert problems == []
    assert message.subject == "Street Safety"
    assert message.reference == "BR-2016-07-04"
    assert "{{ first_name" in message.body
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        scaffold("street-safety", tmp_path, date(2016, 7, 5))
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "-dash", "two words", ".hidden"])
def test_scaffold_refuses_bad_names(tmp_path, name):
    with pytest.raises(InputError, match="use letters, digits"):
        scaffold(name, tmp_path, date(2016, 7, 4))
    assert not (tmp_path / "messages").exists() or not any((tmp_path / "messages").iterdir())
