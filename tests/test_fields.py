"""Placeholders: `{{ column }}` and `{{ column or "fallback" }}`, and nothing else."""

from __future__ import annotations

import pytest

from bulletin.fields import Placeholder, field_key, parse, placeholders


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("email", "email"),
        ("Email Address", "email"),
        ("E-mail", "email"),
        ("email_address", "email"),
        ("EMAIL", "email"),
        (" First Name ", "first_name"),
        ("first_name", "first_name"),
        ("Forename", "first_name"),
        ("Surname", "last_name"),
        ("last-name", "last_name"),
        ("Post Code", "postcode"),
        ("Telephone", "phone"),
        ("Meeting Night", "meetingnight"),
    ],
)
def test_field_key(name, key):
    assert field_key(name) == key


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ first_name }}", Placeholder("first_name", "first_name")),
        ("{{first_name}}", Placeholder("first_name", "first_name")),
        ("{{  FirstName  }}", Placeholder("FirstName", "first_name")),
        ("{{ surname }}", Placeholder("surname", "last_name")),
        (
            '{{ first_name or "Co-ordinator" }}',
            Placeholder("first_name", "first_name", "Co-ordinator"),
        ),
        (
            "{{ first_name or 'Friend & Neighbour' }}",
            Placeholder("first_name", "first_name", "Friend & Neighbour"),
        ),
        ('{{ ward or "" }}', Placeholder("ward", "ward", "")),
    ],
)
def test_placeholders(text, expected):
    segments, problems = parse(f"Dear {text},")
    assert problems == []
    assert segments == ["Dear ", expected, ","]


def test_text_without_placeholders_is_one_literal():
    text = "Call 999 in an emergency — 100% of the time { not a placeholder }."
    assert parse(text) == ([text], [])


def test_placeholders_lists_them_in_order():
    segments, _ = parse("{{ ward }}: {{ first_name }} {{ last_name }} of {{ ward }}")
    assert [p.key for p in placeholders(segments)] == ["ward", "first_name", "last_name", "ward"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("{{ ''.__class__ }}", 1, "is not a placeholder"),
        ("{{ 7*7 }}", 1, "is not a placeholder"),
        ("{{ first_name|upper }}", 1, "is not a placeholder"),
        ("{{ config }}{{ self.__init__ }}", 1, "is not a placeholder"),
        ("{{ first_name or last_name }}", 1, "is not a placeholder"),
        ("{{ }}", 1, "is not a placeholder"),
        ("{{ lipsum.__globals__ }}", 1, "is not a placeholder"),
        ("one\n{% if ward %}yes{% endif %}", 2, "template tags are not allowed"),
        ("one\ntwo\n{# a comment #}", 3, "template tags are not allowed"),
        ("{% for x in range(10) %}", 1, "template tags are not allowed"),
        ("Dear {{ first_name,\n\nthanks", 1, "'{{' is never closed with '}}'"),
        ("one\nDear {{ first_name", 2, "'{{' is never closed with '}}'"),
    ],
)
def test_what_is_not_a_placeholder_is_a_problem_with_its_line(text, line, message):
    _, problems = parse(text, file="messages/m.md", first_line=1)
    assert problems, text
    assert problems[0].file == "messages/m.md"
    assert problems[0].line == line
    assert message in problems[0].text


def test_first_line_offsets_problem_lines():
    _, problems = parse("a\nb\n{{ 7*7 }}", file="m.md", first_line=10)
    assert [p.line for p in problems] == [12]


def test_a_template_tag_is_reported_once():
    _, problems = parse("{% if ward %}yes{% endif %}")
    assert [p.text.split(":")[0] for p in problems] == ["'{% if ward %}'", "'{% endif %}'"]


def test_bad_placeholders_stay_as_literal_text():
    segments, problems = parse("x {{ 7*7 }} y")
    assert len(problems) == 1
    assert "".join(s for s in segments if isinstance(s, str)) == "x {{ 7*7 }} y"


def test_markdown_heading_attributes_are_not_template_comments():
    # "{#anchor}" is Markdown's attribute-list syntax, not a Jinja comment.
    segments, problems = parse("## Contact us {#contact}\n\nSee #westandtogether")
    assert problems == []
    assert placeholders(segments) == []
