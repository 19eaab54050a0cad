"""Header injection through every value that reaches an email header.

Decision (issue 8): a "line break" is any character Python's `str.splitlines()` breaks at —
CR, LF, VT, FF, FS/GS/RS, NEL (U+0085), LINE SEPARATOR (U+2028) and PARAGRAPH SEPARATOR
(U+2029). The email package refuses all of them in a header, and some mail software treats the
Unicode ones as line ends, so bulletin refuses them wherever a value reaches a header: contact
names and addresses (FILE:LINE from the loader), the subject, from, reply_to, category and
reference (FILE:LINE from `check`), and any contact field used in the subject. Other values are
checked as they are sent: the .eml (preview, outbox), the SMTP envelope and message, and the
SendGrid request must each carry exactly one recipient and no header the message did not ask
for, whatever the name holds.
"""

from __future__ import annotations

import csv
import json
from email import message_from_bytes, policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulletin.check import check_message
from bulletin.config import load_settings
from bulletin.contacts import load_contacts
from bulletin.fields import LINE_BREAKS
from bulletin.message import load_message
from bulletin.render import build_mime, message_bytes, mime_bytes

BREAKS = {f"U+{ord(ch):04X}": ch for ch in LINE_BREAKS}
INJECTION = "Bcc: evil@example.com"
FROM = "Bromley Police <bromley.neighbourhoods@example.org>"
SUBJECT_USES_WARD = f"""\
---
subject: "News for {{{{ ward }}}}"
from: "{FROM}"
public: false
---
Dear {{{{ first_name }}}},
"""


def write_rows(workdir, rows: list[list[str]]) -> None:
    for old in (workdir / "contacts").glob("*.csv"):
        old.unlink()
    with (workdir / "contacts" / "list.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "first_name", "last_name", "ward"])
        writer.writerows(rows)


@pytest.mark.parametrize("field", ["email", "first_name", "last_name"])
@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_line_break_in_a_name_or_address_is_refused_with_its_line(workdir, cli, name, field):
    row = {"email": "ada@example.org", "first_name": "Ada", "last_name": "Okafor"}
    row[field] += BREAKS[name] + INJECTION
    write_rows(workdir, [["bo@example.org", "Bo", "Li", "Penge"], [*row.values(), "Penge"]])
    result = cli("contacts", "check", expect=1)
    assert f"contacts/list.csv:3: {field} contains a line break" in result.stderr
    sent = cli("send", "eu-referendum", "--yes", expect=1)
    assert "nothing was sent" in sent.stderr and not (workdir / "outbox").exists()


@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_line_break_in_a_field_used_in_the_subject_is_refused(workdir, cli, name):
    write_rows(workdir, [["ada@example.org", "Ada", "Okafor", f"Penge{BREAKS[name]}{INJECTION}"]])
    (workdir / "messages" / "ward-news.md").write_text(SUBJECT_USES_WARD, encoding="utf-8")
    result = cli("check", "ward-news", expect=1)
    assert "contacts/list.csv:2: ward contains a line break and is used in the subject" in (
        result.stderr
    )


@pytest.mark.parametrize("key", ["subject", "from", "reply_to", "category", "reference"])
@pytest.mark.parametrize("name", sorted(BREAKS))
def test_a_line_break_in_a_front_matter_header_is_refused_with_its_line(workdir, key, name):
    values = {
        "subject": "Hello",
        "from": FROM,
        "reply_to": FROM,
        "category": "news",
        "reference": "BR-1",
    }
    values[key] += BREAKS[name] + INJECTION
    front = "".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items())  # JSON escapes: YAML
    path = workdir / "messages" / "injected.md"
    path.write_text(f"---\n{front}---\nHello\n", encoding="utf-8")
    _message, problems = load_message(path, workdir)
    line = 2 + list(values).index(key)
    assert [(p.line, p.text.split()[0]) for p in problems] == [(line, key)], problems


# Names that are hostile but have no line break: they must stay inside the To header.
names = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs",), exclude_characters=LINE_BREAKS + "\x00"
    ),
    max_size=40,
) | st.sampled_from(
    [
        "Evil <evil@example.com>, Eve",
        "Zoë Evil <evil@example.com>, Eve",  # non-ASCII: once a second To address
        '"Mallory" <m@example.com>',
        "=?utf-8?b?QmNjOiBldmlsQGV4YW1wbGUuY29t?=",
        "a; Bcc: evil@example.com",
        '\\"; Cc: evil@example.com',
        "\t Bcc: evil@example.com",
    ]
)


def parse(raw: bytes):
    return message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)


def test_hostile_names_stay_inside_the_to_header(workdir, tmp_path_factory):
    checked = check_message("eu-referendum", load_settings(workdir, environ={}))
    compiled = checked.compiled
    url = "https://bulletin.example.org/unsubscribe?t=1.1.x"
    first = checked.recipients[0]
    expected_headers = [
        k
        for k, _ in parse(
            message_bytes(
                compiled,
                compiled.render(first, url),
                first.email,
                to_name=first.name,
                unsubscribe_url=url,
            )
        ).items()
    ]

    @settings(max_examples=200, deadline=None)
    @given(first_name=names, last_name=names)
    def check(first_name: str, last_name: str) -> None:
        folder = tmp_path_factory.mktemp("names")
        with (folder / "list.csv").open("w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(
                [["email", "first_name", "last_name"], ["ada@example.org", first_name, last_name]]
            )
        loaded = load_contacts([folder / "list.csv"], folder)
        if loaded.problems:
            return  # refused with FILE:LINE
        (contact,) = loaded.contacts
        rendered = compiled.render(contact, url)
        fast = message_bytes(
            compiled, rendered, contact.email, to_name=contact.name, unsubscribe_url=url
        )
        slow = mime_bytes(
            build_mime(compiled, rendered, contact.email, to_name=contact.name, unsubscribe_url=url)
        )
        for raw in (fast, slow):  # the outbox / SMTP bytes, and preview's .eml
            mail = parse(raw)
            assert [k for k, _ in mail.items()][: len(expected_headers)] == expected_headers
            assert "Bcc" not in mail and "Cc" not in mail
            (to,) = mail["To"].addresses
            assert to.addr_spec == "ada@example.org"
            # The same characters (Python's parser puts a space between two encoded-words).
            assert "".join(to.display_name.split()) == "".join(contact.name.split())

    check()


def test_hostile_names_reach_one_smtp_recipient_each(workdir, cli, smtp_env):
    hostile = [
        "Evil <evil@example.com>, Eve",
        "a; Bcc: evil@example.com",
        '"M" <m@example.com>',
        "=?utf-8?q?Bcc=3A_evil=40example=2Ecom?=",
    ]
    write_rows(
        workdir, [[f"v{n}@example.org", name, name, "Penge"] for n, name in enumerate(hostile)]
    )
    cli("send", "eu-referendum", "--yes")
    assert sorted(rcpts for _, rcpts, _ in smtp_env.messages) == [
        [f"v{n}@example.org"] for n in range(len(hostile))
    ]
    for mail in smtp_env.parsed():
        assert "Bcc" not in mail and "Cc" not in mail and len(mail["To"].addresses) == 1


def test_hostile_names_reach_sendgrid_as_one_to_each_and_no_extra_headers(
    workdir, cli, sendgrid_env
):
    write_rows(workdir, [["v0@example.org", "Evil <evil@example.com>, Eve", "x", "Penge"]])
    cli("send", "eu-referendum", "--yes")
    (request,) = sendgrid_env.accepted
    (personalization,) = request["body"]["personalizations"]
    assert personalization["to"] == [
        {"email": "v0@example.org", "name": "Evil <evil@example.com>, Eve x"}
    ]
    assert "cc" not in personalization and "bcc" not in personalization
    assert set(request["body"]["headers"]) == {"X-Bulletin-Reference"}


def test_an_international_domain_is_sent_in_its_ascii_form_everywhere(workdir, cli, smtp_env):
    """`bücher.example.org` once crashed preview --format eml, the outbox and SMTP."""
    write_rows(workdir, [["Volunteer@Bücher.example.org", "Idn", "Domain", "Penge"]])
    ascii_form = "volunteer@xn--bcher-kva.example.org"
    eml = cli("preview", "eu-referendum", "-f", "eml").stdout.encode()
    assert parse(eml)["To"].addresses[0].addr_spec.lower() == ascii_form
    cli("send", "eu-referendum", "--yes")
    assert [[r.lower() for r in rcpts] for _, rcpts, _ in smtp_env.messages] == [[ascii_form]]
    cli("suppress", "add", "volunteer@bücher.example.org")  # either spelling: one address
    listed = cli("send", "eu-referendum", "--yes", "--new-send").stderr
    assert "1 suppressed" in listed and len(smtp_env.messages) == 1
