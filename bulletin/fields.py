"""Placeholders in messages: `{{ field }}` and `{{ field or "fallback" }}`, nothing else.

Message bodies are data, not code, so they are never given to a template engine: this
module finds the placeholders with a regular expression and everything else is text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bulletin.errors import Problem

# Header spellings that mean the same column (DESIGN.md: case, spaces, "-" and "_" ignored).
ALIASES = {
    "email": "email",
    "emailaddress": "email",
    "mail": "email",
    "firstname": "first_name",
    "forename": "first_name",
    "givenname": "first_name",
    "first": "first_name",
    "lastname": "last_name",
    "surname": "last_name",
    "familyname": "last_name",
    "last": "last_name",
    "ward": "ward",
    "role": "role",
    "scheme": "scheme",
    "phone": "phone",
    "telephone": "phone",
    "phonenumber": "phone",
    "tel": "phone",
    "mobile": "phone",
    "address": "address",
    "postaladdress": "address",
    "postcode": "postcode",
    "postalcode": "postcode",
    "zip": "postcode",
    "zipcode": "postcode",
}

# Every character str.splitlines() breaks a line at. The email package refuses each of them in
# a header, so a value that reaches one (a name, an address, the subject) may hold none (issue 8).
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


_LINE_BREAK = re.compile(f"[{LINE_BREAKS}]")


def has_line_break(text: str) -> bool:
    """True if `text` would split into more than one line anywhere (CR, LF, U+2028, …)."""
    return _LINE_BREAK.search(text) is not None  # one regex: called per field of every row


_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")


def has_control(text: str) -> bool:
    """True if `text` holds a control character other than tab and the line breaks."""
    return _CONTROL.search(text) is not None


_SEPARATORS = re.compile(r"[\s\-_]+")
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_INNER = re.compile(
    r"""^\s*(?P<name>[A-Za-z][A-Za-z0-9_]*)\s*
        (?:\bor\s*(?:"(?P<dq>[^"{}\n]*)"|'(?P<sq>[^'{}\n]*)'))?\s*$""",
    re.VERBOSE,
)
# A whole `{% … %}` or `{# … #}` on one line is one problem; a lone `{%` is one too. A lone `{#`
# is left alone: `## Heading {#anchor}` is Markdown's attribute-list syntax, not a comment.
_TAGS = re.compile(r"\{%[^\n]*?%\}|\{#[^\n]*?#\}|\{%")


def field_key(name: str) -> str:
    """The canonical key of a column or placeholder name (`E-mail` → `email`)."""
    normal = _SEPARATORS.sub("", name.strip().lower())
    return ALIASES.get(normal, normal)


@dataclass(frozen=True)
class Placeholder:
    name: str  # as written
    key: str  # field_key(name)
    fallback: str = ""
    line: int | None = field(default=None, compare=False)  # where it is written, for problems


Segment = str | Placeholder


def parse(
    text: str, *, file: str | None = None, first_line: int = 1
) -> tuple[list[Segment], list[Problem]]:
    """Split text into literal strings and placeholders, listing every malformed one."""
    segments: list[Segment] = []
    problems: list[Problem] = []

    def line_of(offset: int) -> int:
        return first_line + text.count("\n", 0, offset)

    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        literal = text[pos : match.start()]
        segments.append(literal)
        inner = _INNER.match(match.group(1))
        if inner is None:
            problems.append(
                Problem(
                    file,
                    line_of(match.start()),
                    f"{match.group(0)!r} is not a placeholder; write {{{{ column }}}} or "
                    f'{{{{ column or "fallback" }}}} with a contact column name',
                )
            )
            segments.append(match.group(0))
        else:
            fallback = inner.group("dq") if inner.group("dq") is not None else inner.group("sq")
            name = inner.group("name")
            segments.append(
                Placeholder(name, field_key(name), fallback or "", line_of(match.start()))
            )
        pos = match.end()
    segments.append(text[pos:])
    for literal_start, literal in _literal_offsets(text):
        for tag in _TAGS.finditer(literal):
            problems.append(
                Problem(
                    file,
                    line_of(literal_start + tag.start()),
                    f"{tag.group(0)!r}: template tags are not allowed in messages; "
                    "use {{ column }} placeholders only",
                )
            )
        unclosed = literal.find("{{")
        if unclosed >= 0:
            problems.append(
                Problem(file, line_of(literal_start + unclosed), "'{{' is never closed with '}}'")
            )
    return [s for s in segments if s != ""], problems


def _literal_offsets(text: str) -> list[tuple[int, str]]:
    out, pos = [], 0
    for match in _PLACEHOLDER.finditer(text):
        out.append((pos, text[pos : match.start()]))
        pos = match.end()
    out.append((pos, text[pos:]))
    return out


def placeholders(segments: list[Segment]) -> list[Placeholder]:
    return [s for s in segments if isinstance(s, Placeholder)]
