"""`bulletin check`: every mistake found, each as one `FILE:LINE: what is wrong` line, exit 1."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bulletin.check import check_message

GOOD_FRONT = "subject: Hello\nfrom: police@example.org\n"


def write_message(workdir: Path, text: str, name: str = "bad") -> None:
    (workdir / "messages" / f"{name}.md").write_text(textwrap.dedent(text), encoding="utf-8")


def problems_of(result) -> list[str]:
    """The problem lines of a failed check (everything but the closing `Error:` line)."""
    lines = result.stderr.splitlines()
    assert lines[-1].startswith("Error: ") and lines[-1].endswith(
        "problem(s) found; fix them and run bulletin check again"
    )
    return lines[:-1]


def test_the_example_passes(workdir, cli):
    result = cli("check", "eu-referendum")
    assert result.stdout.strip() == (
        "messages/eu-referendum.md: OK — 34 email recipient(s), 2 postal-only"
    )
    assert result.stderr == ""


def test_the_example_passes_by_path(workdir, cli):
    result = cli("check", "messages/eu-referendum.md")
    assert "OK — 34 email recipient(s)" in result.stdout


# Each case: the message file, then the start of the one problem line check must print.
MISTAKES = [
    pytest.param(
        "subject: Hello\n\nDear {{ first_name }}\n",
        "messages/bad.md:1: no front matter: start the file with a line '---'",
        id="no front matter",
    ),
    pytest.param(
        "---\nsubject: Hello\nfrom: police@example.org\nBody with no closing fence\n",
        "messages/bad.md:1: no front matter",
        id="unclosed front matter",
    ),
    pytest.param(
        '---\nsubject: "Hello\nfrom: police@example.org\n---\nBody\n',
        "messages/bad.md:4: front matter is not valid YAML: found unexpected end of stream "
        "(while scanning a quoted scalar that starts on line 2)",
        id="unterminated quote",
    ),
    pytest.param(
        "---\nsubject: Hello\nfrom: police@example.org\n  ward: Penge\n---\nBody\n",
        "messages/bad.md:4: front matter is not valid YAML: mapping values are not allowed here",
        id="bad indentation",
    ),
    pytest.param(
        "---\n- subject\n- from\n---\nBody\n",
        "messages/bad.md:2: front matter must be 'key: value' lines",
        id="front matter is a list",
    ),
    pytest.param(
        "---\nJust a sentence\n---\nBody\n",
        "messages/bad.md:2: front matter must be 'key: value' lines",
        id="front matter is a sentence",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}colour: blue\n---\nBody\n",
        "messages/bad.md:4: unknown front matter key 'colour'; known keys: subject, from,",
        id="unknown key",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}Subject: Hello again\n---\nBody\n",
        "messages/bad.md:4: unknown front matter key 'Subject'",
        id="key in the wrong case",
    ),
    pytest.param(
        "---\nfrom: police@example.org\n---\nBody\n",
        "messages/bad.md:1: subject is missing; add 'subject: …' to the front matter",
        id="missing subject",
    ),
    pytest.param(
        '---\nsubject: "  "\nfrom: police@example.org\n---\nBody\n',
        "messages/bad.md:2: subject is missing",
        id="blank subject",
    ),
    pytest.param(
        '---\nsubject: "Hello\\r\\nBcc: x@example.com"\nfrom: police@example.org\n---\nBody\n',
        "messages/bad.md:2: subject must be on one line",
        id="CRLF in subject",
    ),
    pytest.param(
        "---\nsubject: Hello\nfrom: Bromley Police\n---\nBody\n",
        "messages/bad.md:3: from: 'Bromley Police' has no email address; "
        'write "Name <name@example.org>"',
        id="from without address",
    ),
    pytest.param(
        "---\nsubject: Hello\nfrom: Bromley <police@example>\n---\nBody\n",
        "messages/bad.md:3: from: 'police@example' is not a valid email address",
        id="from invalid",
    ),
    pytest.param(
        '---\nsubject: Hello\nfrom: "Bromley <p@example.org>\\nBcc: x@example.com"\n---\nBody\n',
        "messages/bad.md:3: from must be on one line (it reaches an email header)",
        id="LF in from",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}reply_to: snt at example.org\n---\nBody\n",
        "messages/bad.md:4: reply_to: 'snt at example.org' has no email address",
        id="reply_to invalid",
    ),
    pytest.param(
        "---\nsubject: Hello\n---\nBody\n",
        "messages/bad.md:1: no sender: add 'from: Name <address>' or set BULLETIN_FROM in .env",
        id="no sender anywhere",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}send_at: next tuesday\n---\nBody\n",
        "messages/bad.md:4: send_at: 'next tuesday' is not an ISO date-time; "
        "write e.g. 2016-07-04T07:30",
        id="send_at words",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}send_at: 2016-13-45T07:30\n---\nBody\n",
        "messages/bad.md:4: send_at: '2016-13-45T07:30' is not an ISO date-time",
        id="send_at impossible date",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}send_at: [2016]\n---\nBody\n",
        "messages/bad.md:4: send_at must be an ISO date-time",
        id="send_at list",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}---\nDear {{{{ frist_name }}}},\n",
        "messages/bad.md:5: {{ frist_name }}: no contact column 'frist_name' "
        "(columns: address, email, first_name, last_name, phone, postcode, role, scheme, ward)",
        id="unknown placeholder in body",
    ),
    pytest.param(
        "---\nsubject: News for {{ wardd }}\nfrom: p@example.org\n---\nBody\n",
        "messages/bad.md:2: {{ wardd }}: no contact column 'wardd' (columns: ",
        id="unknown placeholder in subject",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}preheader: For {{{{ nmae }}}}\n---\nBody\n",
        "messages/bad.md:4: {{ nmae }}: no contact column 'nmae'",
        id="unknown placeholder in preheader",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}---\nDear {{{{ first_name }}}},\n\nMore about {{{{ name }}}}.\n",
        "messages/bad.md:7: {{ name }}: no contact column 'name'",
        id="unknown placeholder after a known one",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}---\nHello\n\n{{% if ward %}}Penge{{% endif %}}\n",
        "messages/bad.md:7: '{% if ward %}': template tags are not allowed in messages",
        id="template tag",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}---\nHello {{{{ ''.__class__ }}}}\n",
        "messages/bad.md:5: \"{{ ''.__class__ }}\" is not a placeholder; write {{ column }}",
        id="python object access",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}---\nHello\n\nDear {{{{ first_name,\n",
        "messages/bad.md:7: '{{' is never closed with '}}'",
        id="unclosed placeholder",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}audience:\n  wardd: [Penge and Cator]\n---\nBody\n",
        "messages/bad.md:4: audience: no contact list has a column 'wardd'",
        id="audience column that does not exist",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}audience:\n  ward: [Atlantis]\n---\nBody\n",
        "messages/bad.md:4: the audience is empty: no contact matches it",
        id="audience nobody matches",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}audience:\n  ward: []\n---\nBody\n",
        "messages/bad.md:4: audience: ward lists no values; nobody would match",
        id="audience column with no values",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}audience:\n---\nBody\n",
        "messages/bad.md:4: audience is empty; list columns and values",
        id="audience key left empty",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}audience: Penge\n---\nBody\n",
        "messages/bad.md:4: audience must map columns to allowed values",
        id="audience not a mapping",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}contacts: lists/*.csv\n---\nBody\n",
        "messages/bad.md:4: lists/*.csv: no contact file matches",
        id="contacts glob matches nothing",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}contacts: [contacts/coordinators.csv, other.csv]\n---\nBody\n",
        "messages/bad.md:4: other.csv: no such contact file",
        id="contacts file missing",
    ),
    pytest.param(
        f"---\n{GOOD_FRONT}category: [a, b]\n---\nBody\n",
        "messages/bad.md:4: category must be one line of text",
        id="category not text",
    ),
]


@pytest.mark.parametrize(("text", "expected"), MISTAKES)
def test_each_mistake_is_one_clear_line_and_exit_1(workdir, cli, text, expected):
    write_message(workdir, text)
    result = cli("check", "bad", expect=1)
    lines = problems_of(result)
    assert any(line.startswith(expected) for line in lines), "\n".join(lines)
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_every_problem_is_listed_in_one_run(workdir, cli):
    write_message(
        workdir,
        """\
        ---
        subject: Hello {{ frist_name }}
        from: "Bromley <not-an-address>"
        reply_to: "x@y"
        colour: blue
        send_at: next tuesday
        ---
        Dear {{ first_name }},

        {% if x %}yes{% endif %} and {{ ''.__class__ }}

        Unclosed {{ last_name
        """,
    )
    lines = problems_of(cli("check", "bad", expect=1))
    expected = [
        "messages/bad.md:5: unknown front matter key 'colour'",
        "messages/bad.md:3: from: 'Bromley <not-an-address>' has no email address",
        "messages/bad.md:4: reply_to: 'x@y' is not a valid email address",
        "messages/bad.md:6: send_at: 'next tuesday' is not an ISO date-time",
        "messages/bad.md:10: \"{{ ''.__class__ }}\" is not a placeholder",
        "messages/bad.md:10: '{% if x %}': template tags are not allowed",
        "messages/bad.md:10: '{% endif %}': template tags are not allowed",
        "messages/bad.md:12: '{{' is never closed with '}}'",
        "messages/bad.md:2: {{ frist_name }}: no contact column 'frist_name'",
        "messages/bad.md:8: {{ first_name }} has no fallback, and the message's public page",
    ]
    for start in expected:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert len(lines) == len(expected), lines


def test_a_missing_audience_column_is_not_also_reported_as_an_empty_audience(workdir, cli):
    write_message(workdir, f"---\n{GOOD_FRONT}audience:\n  wardd: [Penge]\n---\nBody\n")
    lines = problems_of(cli("check", "bad", expect=1))
    assert lines == ["messages/bad.md:4: audience: no contact list has a column 'wardd'"]


def test_invalid_contacts_in_the_audience_fail_the_check(workdir, cli):
    (workdir / "contacts" / "extra.csv").write_bytes(
        b"email,first_name,ward\nann@example.org,Ann,Penge\nnot-an-address,Bob,Penge\n"
    )
    lines = problems_of(cli("check", "eu-referendum", expect=1))
    assert len(lines) == 1
    assert lines[0].startswith("contacts/extra.csv:3: 'not-an-address' is not a valid email")


def test_duplicates_are_reported_but_pass(workdir, cli):
    (workdir / "contacts" / "extra.csv").write_bytes(
        b"email,first_name,ward\nDAVID.ONEILL@example.com,David,Penge\n"
    )
    result = cli("check", "eu-referendum")
    assert result.stderr.strip() == (
        "contacts/extra.csv:2: DAVID.ONEILL@example.com is also on contacts/coordinators.csv:3; "
        "it will be sent one copy"
    )
    assert result.stdout.strip().endswith(
        "34 email recipient(s), 2 postal-only, 1 duplicate row(s) skipped"
    )


def test_audience_limits_the_recipients(workdir, cli):
    write_message(
        workdir,
        f"---\n{GOOD_FRONT}audience:\n  Ward: [penge and cator]\n  role: [coordinator]\n---\nHi\n",
    )
    assert cli("check", "bad").stdout.strip() == (
        "messages/bad.md: OK — 3 email recipient(s), 1 postal-only"
    )


def test_a_contact_field_with_a_line_break_used_in_the_subject_is_caught(workdir, cli):
    (workdir / "contacts" / "extra.csv").write_bytes(
        b'email,first_name,ward\nann@example.org,Ann,"Penge\r\nBcc: x@example.com"\n'
    )
    write_message(
        workdir, "---\nsubject: News for {{ ward }}\nfrom: p@example.org\npublic: false\n---\nHi\n"
    )
    lines = problems_of(cli("check", "bad", expect=1))
    assert lines == ["contacts/extra.csv:2: ward contains a line break and is used in the subject"]


@pytest.mark.parametrize(
    ("mistake", "reason"),
    [
        (" {% endfor %}", "Encountered unknown tag 'endfor'"),
        (" {{ subject | }}", "expected token 'name'"),
        (" {{ subject | nosuchfilter }}", "No filter named 'nosuchfilter'"),
    ],
)
def test_a_broken_user_template_is_reported_with_its_line(workdir, cli, mistake, reason):
    template = workdir / "templates" / "email.html"
    lines = template.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[10] = lines[10].rstrip("\n") + mistake + "\n"
    template.write_text("".join(lines), encoding="utf-8")
    problem = problems_of(cli("check", "eu-referendum", expect=1))
    assert len(problem) == 1
    assert problem[0].startswith("templates/email.html:11: template error: ")
    assert reason in problem[0]


def test_an_unclosed_block_in_a_user_template(workdir, cli):
    template = workdir / "templates" / "email.txt"
    template.write_text("{% if subject %}\n{{ subject }}\n\n{{ body }}\n", encoding="utf-8")
    (problem,) = problems_of(cli("check", "eu-referendum", expect=1))
    assert problem.startswith("templates/email.txt:")
    assert "Unexpected end of template" in problem and "'endif'" in problem


def test_a_broken_print_template_is_caught_by_check(workdir, cli):
    (workdir / "templates" / "print.html").write_text(
        "<html>\n<body>\n{% for letter in letters %}\n{{ letter.body }}\n</body>\n",
        encoding="utf-8",
    )
    (problem,) = problems_of(cli("check", "eu-referendum", expect=1))
    assert problem.startswith("templates/print.html:")


def test_a_missing_message_says_what_to_do(workdir, cli):
    result = cli("check", "nope", expect=1)
    assert result.stderr.strip() == (
        "Error: messages/nope.md: no such message. Messages here: eu-referendum; "
        "or create it with `bulletin new nope`"
    )


def test_check_message_returns_every_problem_as_values(settings):
    (settings.workdir / "messages" / "bad.md").write_text(
        "---\nsubject: Hi {{ x }}\nfrom: p@example.org\n---\n{{ y }}\n", encoding="utf-8"
    )
    checked = check_message("bad", settings)
    assert not checked.ok
    assert [(p.file, p.line) for p in checked.problems] == [
        ("messages/bad.md", 2),
        ("messages/bad.md", 5),
    ]
    assert len(checked.recipients) == 34 and len(checked.postal) == 2
