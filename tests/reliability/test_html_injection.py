"""HTML and script injection through every contact field, into every HTML bulletin writes.

Each hostile value goes into first_name, last_name, ward, scheme and a custom `website` column,
which the message uses as text, in a Markdown link, in a raw `<a href>`, as an image source,
in the subject and in the preheader. Every HTML surface is then parsed: the HTML email (preview,
outbox .eml, and SendGrid's substitutions applied as SendGrid would), the HTML report (with a
hostile bounce reason too), the unsubscribe page, and `status --csv` for spreadsheet formulas.
Each must hold exactly the active content (scripts, event handlers, forms, script URLs) of the
same page made with harmless values, and show the hostile text as text.
"""

from __future__ import annotations

import csv
import html
import json
import re
from email import message_from_bytes, policy
from html.parser import HTMLParser
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
from reliability_harness import connect

from bulletin.check import check_message
from bulletin.config import load_settings

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "' onmouseover='alert(3)",
    "</title><script>alert(4)</script>",
    "<svg/onload=alert(5)>",
    "javascript:alert(6)",
    "JaVa\tScRiPt:alert(7)",
    "&lt;script&gt;alert(8)&lt;/script&gt;",
    '<a href="javascript:alert(9)">x</a>',
    "]]><!--<script>alert(10)</script>-->",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxMSk8L3NjcmlwdD4=",
    "{{ 7*7 }}<style>body{display:none}</style>",
]
HARMLESS = "Penge and Cator"
FIELDS = ("first_name", "last_name", "ward", "scheme", "website")
MESSAGE = """\
---
subject: "News for {{ ward }}"
from: "Bromley Police <bromley.neighbourhoods@example.org>"
preheader: "For {{ scheme }}"
public: false
---
Dear {{ first_name }} {{ last_name }} of {{ ward }},

See [your scheme's page]({{ website }}), <a href="{{ website }}">this link</a> and
![a picture]({{ website }}).

Scheme: **{{ scheme }}**
"""
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "background", "poster"}
ACTIVE_TAGS = {"script", "iframe", "object", "embed", "form", "input", "base", "meta", "style"}


class Active(HTMLParser):
    """Collects what a browser could run, and the text it would show."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.active: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ACTIVE_TAGS:
            self.active.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.active.append(f"{tag} {name}=")
            if name in URL_ATTRIBUTES and value:
                bare = re.sub(r"[\x00-\x20\x7f]", "", value).lower()
                if bare.startswith(("javascript:", "vbscript:", "data:")):
                    self.active.append(f"{tag} {name}={bare[:15]}")

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def active(page: str) -> tuple[list[str], str]:
    parser = Active()
    parser.feed(page)
    parser.close()
    return sorted(parser.active), "".join(parser.text)


def assert_inert(page: str, baseline: str, payload: str) -> None:
    found, text = active(page)
    assert found == active(baseline)[0], f"active content from {payload!r}: {found}"
    assert payload.replace("\t", " ") in text.replace("\t", " ") or payload.startswith(
        ("javascript", "JaVa", "data:")
    ), f"{payload!r} is not shown as text"


def write_contacts(workdir, rows: list[dict[str, str]]) -> None:
    for old in (workdir / "contacts").glob("*.csv"):
        old.unlink()
    with (workdir / "contacts" / "hostile.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["email", *FIELDS])
        writer.writeheader()
        writer.writerows(rows)


def hostile_rows() -> list[dict[str, str]]:
    rows = [{"email": "baseline@example.org", **dict.fromkeys(FIELDS, HARMLESS)}]
    rows[0]["website"] = "https://example.org/penge"
    for n, payload in enumerate(PAYLOADS):
        rows.append({"email": f"p{n:02d}@example.org", **dict.fromkeys(FIELDS, payload)})
    return rows


@pytest.fixture
def hostile(workdir):
    write_contacts(workdir, hostile_rows())
    (workdir / "messages" / "hostile.md").write_text(MESSAGE, encoding="utf-8")
    return workdir


def test_every_field_is_inert_in_the_rendered_email_and_preview(hostile, cli):
    checked = check_message("hostile", load_settings(hostile, environ={}))
    assert checked.ok, [str(p) for p in checked.problems]
    by_email = {c.email: c for c in checked.recipients}
    url = "https://bulletin.example.org/unsubscribe?t=1.2.x"
    baseline = checked.compiled.render(by_email["baseline@example.org"], url).html
    for n, payload in enumerate(PAYLOADS):
        rendered = checked.compiled.render(by_email[f"p{n:02d}@example.org"], url)
        assert_inert(rendered.html, baseline, payload)
        assert "49" not in rendered.html  # {{ 7*7 }} in a value is text, not a template
    shown = cli("preview", "hostile", "--contact", "p00@example.org", "-f", "html").stdout
    assert_inert(shown, baseline, PAYLOADS[0])


def test_every_field_is_inert_in_outbox_messages(hostile, cli):
    cli("send", "hostile", "--yes")
    pages = {}
    for path in (hostile / "outbox").glob("*.eml"):
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        pages[mail["To"].addresses[0].addr_spec] = mail.get_body(("html",)).get_content()
    assert len(pages) == len(PAYLOADS) + 1
    for n, payload in enumerate(PAYLOADS):
        assert_inert(pages[f"p{n:02d}@example.org"], pages["baseline@example.org"], payload)


def sendgrid_html(body: dict, personalization: dict) -> str:
    """The HTML SendGrid would send to one personalization: its substitutions applied."""
    page = next(c["value"] for c in body["content"] if c["type"] == "text/html")
    for key, value in personalization["substitutions"].items():
        page = page.replace(key, value)
    return page


def test_every_field_is_inert_in_what_sendgrid_is_asked_to_send(hostile, cli, sendgrid_env):
    cli("send", "hostile", "--yes")
    (request,) = sendgrid_env.accepted
    body = request["body"]
    pages = {p["to"][0]["email"]: sendgrid_html(body, p) for p in body["personalizations"]}
    for n, payload in enumerate(PAYLOADS):
        assert_inert(pages[f"p{n:02d}@example.org"], pages["baseline@example.org"], payload)
        personalization = body["personalizations"][n + 1]
        assert "\n" not in personalization["to"][0].get("name", "")
        assert set(personalization.get("headers", {})) == {
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
        }


def test_the_html_report_shows_hostile_wards_and_bounce_reasons_as_text(
    hostile, cli, sendgrid_env, db_path
):
    cli("send", "hostile", "--yes")
    with connect(db_path) as db:
        ids = {r["email"]: r["id"] for r in db.execute("SELECT id, email FROM deliveries")}
    events = [
        {
            "event": "bounce",
            "type": "bounce",
            "email": f"p{n:02d}@example.org",
            "reason": payload,
            "timestamp": 1467360000 + n,
            "sg_event_id": f"bounce-{n}",
            "bulletin_send": "1",
            "bulletin_delivery": str(ids[f"p{n:02d}@example.org"]),
        }
        for n, payload in enumerate(PAYLOADS)
    ]
    (hostile / "events.json").write_text(json.dumps(events), encoding="utf-8")
    cli("events", "import", "events.json")
    cli("report", "hostile", "-o", "report.html")
    page = (hostile / "report.html").read_text(encoding="utf-8")
    found, text = active(page)
    assert not [f for f in found if "script" in f or " on" in f or "javascript" in f], found
    assert PAYLOADS[0] in text or html.escape(PAYLOADS[0]) in page


def test_status_csv_neutralises_spreadsheet_formulas(workdir, cli):
    formulas = ['=HYPERLINK("http://example.com","x")', "+SUM(A1)", "-2+3", "@cmd"]
    rows = [
        {"email": f"f{n}@example.org", **dict.fromkeys(FIELDS, value)}
        for n, value in enumerate(formulas)
    ]
    write_contacts(workdir, rows)
    cli("send", "eu-referendum", "--yes")
    cli("status", "eu-referendum", "--csv", "out.csv")
    with (workdir / "out.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            for column in ("first_name", "last_name", "ward"):
                assert row[column][0] == "'", row


def test_the_unsubscribe_page_escapes_the_address_and_never_reflects_a_bad_token(
    workdir, cli, sendgrid_env, db_path, monkeypatch
):
    from bulletin.unsubscribe import make_token
    from bulletin.web.webhook import make_server

    write_contacts(workdir, [{"email": "o'brien&co@example.org", **dict.fromkeys(FIELDS, "x")}])
    cli("send", "eu-referendum", "--yes")
    config = load_settings(workdir)
    server = make_server(config, port=0, insecure=True)  # no webhook key: pages only
    server.start()
    try:
        token = make_token(config.secret, 1, 1, "o'brien&co@example.org")
        good = urlopen(f"{server.url}/unsubscribe?t={token}", timeout=10).read().decode()
        bad_token = "<script>alert(1)</script>"
        try:
            urlopen(f"{server.url}/unsubscribe?t=%3Cscript%3Ealert(1)%3C/script%3E", timeout=10)
            raise AssertionError("a bad token was accepted")
        except OSError as error:  # HTTPError is an OSError: 400 with a page
            bad = error.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "o•••••o@example.org" in good and "brien&" not in good  # masked (issue 21)
    found, _ = active(good)
    assert [f for f in found if f not in ("<meta>", "<style>")] == ["<form>", "<input>"]
    assert bad_token not in bad and "alert" not in bad
    assert urlsplit(server.url).hostname == "127.0.0.1"
