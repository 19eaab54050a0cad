"""Issue 12: what an adversarial review broke, one regression test (or a few) per finding.

Each test names its finding by number (`test_12_1_…` is finding 1 of issue 12); the rows in
tests/reliability/README.md point here.
"""

from __future__ import annotations

import csv
import re
from email import message_from_bytes, policy
from html import unescape
from pathlib import Path

import pytest

ZOE = "Zoë =?utf-8?b?DQpCY2M6IGV2aWxAZXZpbC5leGFtcGxl?="  # decodes to "\r\nBcc: evil@…"
FROM = "Bromley Police <bromley.neighbourhoods@example.org>"


def write_contacts(workdir: Path, rows: list[dict[str, str]]) -> None:
    for old in (workdir / "contacts").glob("*.csv"):
        old.unlink()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (workdir / "contacts" / "list.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def write_message(workdir: Path, name: str, body: str, **front: str) -> str:
    front = {"subject": "Hello", "from": FROM, **front}
    head = "".join(f"{k}: {v!r}\n".replace("'", '"', 2) for k, v in front.items())
    (workdir / "messages" / f"{name}.md").write_text(f"---\n{head}---\n{body}\n", "utf-8")
    return name


def yaml_message(workdir: Path, name: str, text: str) -> str:
    (workdir / "messages" / f"{name}.md").write_text(text, encoding="utf-8")
    return name


# --- 1. header injection through RFC 2047 encoded words ---------------------------------------

PERSONAL_SUBJECT = f"""\
---
subject: "{{{{ first_name }}}}, key messages from the Borough Commander"
from: "{FROM}"
---
Dear {{{{ first_name }}}},
"""


def assert_headers_intact(raw: bytes) -> None:
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\n") if line[:1] not in b" \t"]
    assert b"bcc" not in names and b"reply-to" not in names and b"cc" not in names
    assert b"list-unsubscribe" in names and b"content-type" in names and b"mime-version" in names
    parsed = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
    assert parsed["Bcc"] is None and parsed["Reply-To"] is None
    assert str(parsed["Subject"]) == f"{ZOE}, key messages from the Borough Commander"
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["List-Unsubscribe"] is not None
    assert len(parsed.get_all("To")) == 1 and "zoe@example.org" in str(parsed["To"])


@pytest.fixture
def zoe(workdir: Path) -> str:
    write_contacts(workdir, [{"email": "zoe@example.org", "first_name": ZOE, "last_name": "Li"}])
    return yaml_message(workdir, "zoe", PERSONAL_SUBJECT)


def test_12_1_encoded_word_in_subject_outbox_and_preview(workdir, cli, zoe, monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", "s" * 40)
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", "https://bulletin.example.org")
    cli("check", zoe)
    cli("send", zoe, "--yes", "--transport", "outbox")
    (eml,) = (workdir / "outbox").glob("*.eml")
    assert_headers_intact(eml.read_bytes())
    cli("preview", zoe, "--format", "eml", "-o", "zoe.eml")
    assert_headers_intact((workdir / "zoe.eml").read_bytes())


def test_12_1_encoded_word_in_subject_over_smtp(workdir, cli, zoe, smtp_env):
    cli("send", zoe, "--yes")
    ((_, recipients, raw),) = smtp_env.messages
    assert recipients == ["zoe@example.org"]
    assert_headers_intact(raw)


# --- 4. the final URL after substitution decides the scheme -----------------------------------

LINK_BODIES = {
    "empty base": "[p]({{ base }}{{ path }})",
    "split scheme": "[x](java{{ last_name }})",
    "leading space": '<a href=" {{ website }}">site</a>',
    "leading tab entity": '<a href="&#9;{{ website }}">site</a>',
    "image": '<img src=" {{ website }}" alt="logo">',
}


@pytest.mark.parametrize("body", LINK_BODIES.values(), ids=LINK_BODIES)
def test_12_4_no_javascript_url_after_substitution(workdir, cli, body):
    write_contacts(
        workdir,
        [
            {
                "email": "ada@example.org",
                "first_name": "Ada",
                "last_name": "script:alert(1)",
                "base": "",
                "path": "javascript:alert(1)",
                "website": "javascript:alert(document.domain)",
            },
            {
                "email": "bo@example.org",
                "first_name": "Bo",
                "last_name": "script-free",
                "base": "https://example.org",
                "path": "/news",
                "website": "https://example.org/",
            },
        ],
    )
    name = write_message(workdir, "links", body)
    result = cli("check", name, expect=1)
    assert "contacts/list.csv:2: a link would become" in result.stderr
    assert "list.csv:3" not in result.stderr
    html = cli("preview", name, "--format", "html", "--contact", "ada@example.org").stdout
    urls = [unescape(u) for u in re.findall(r'(?:href|src)="([^"]*)"', html)]
    assert urls and not [u for u in urls if "javascript" in re.sub(r"[\x00-\x20]", "", u)]
    good = cli("preview", name, "--format", "html", "--contact", "bo@example.org").stdout
    assert "https://example.org" in good or "javascript-free" in good  # safe values kept
