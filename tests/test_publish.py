"""Public pages of sent messages (issue 21): the share line, /m/<reference>, publish/unpublish.

Everything is real: sends to the outbox, the events server (uvicorn) serving the pages,
WeasyPrint PDFs read with pypdf, Chromium with axe-core for accessibility.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from accessibility import assert_accessible
from browser import save_screenshot
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bulletin.config import load_settings
from bulletin.ledger.publications import Publication
from bulletin.publish import render_notice, render_page, sent_message
from bulletin.web.webhook import make_server

SECRET = "publish-test-secret-5c1e-0123456789abcdef"
PUBLIC = "https://bulletin.example.org"
REFERENCE = "BR-2016-07-01"
PAGE = f"/m/{REFERENCE}"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", SECRET)
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", PUBLIC)


@pytest.fixture
def sent(workdir, cli, env) -> list:
    """The example letter sent to the outbox: its emails, parsed."""
    cli("send", "eu-referendum", "--yes")
    return emails(workdir, 1)


def emails(workdir: Path, send_id: int) -> list:
    return [
        message_from_bytes(path.read_bytes(), policy=policy.default)
        for path in sorted((workdir / "outbox").glob(f"{send_id}-*.eml"))
    ]


def parts(mail) -> tuple[str, str]:
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = mail.get_body(("html",)).get_content()
    return text, html


@pytest.fixture
def server(workdir, env):
    running = make_server(load_settings(workdir), "127.0.0.1", 0, insecure=True)
    running.start()
    yield running
    running.stop()


def get(server, path: str, method: str = "GET") -> requests.Response:
    return requests.request(method, server.url + path, timeout=30, allow_redirects=False)


def pdf_text(data: bytes) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return len(reader.pages), " ".join(" ".join(p.extract_text().split()) for p in reader.pages)


def sample_values(workdir: Path) -> set[str]:
    """Every field value of every sample contact (names, addresses, wards, phones, …)."""
    with (workdir / "contacts" / "coordinators.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 36
    return {value.strip() for row in rows for value in row.values() if value and value.strip()}


def tokens(mails: list) -> set[str]:
    found = set()
    for mail in mails:
        link = mail["List-Unsubscribe"].strip("<>")
        found.add(parse_qs(urlsplit(link).query)["t"][0])
    return found


def leaks(text: str, values: set[str], source: str = "") -> list[str]:
    """The values found in `text`, but for words the message's author wrote themselves (the
    example says "partners", a sample contact's role is "partner")."""
    words, own = " ".join(text.split()), " ".join(source.split())

    def found(value: str, where: str) -> bool:
        return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", where, re.IGNORECASE) is not None

    return sorted(v for v in values if found(v, words) and not found(v, own))


# --- the share line --------------------------------------------------------------------------


def test_every_email_has_the_share_line_with_the_public_links(sent):
    assert len(sent) == 34
    for mail in sent:
        text, html = parts(mail)
        assert "Share this message rather than forwarding this email" in text
        assert f"{PUBLIC}{PAGE}\n" in text and f"{PUBLIC}{PAGE}/notice.pdf" in text
        assert f'<a href="{PUBLIC}{PAGE}"' in html and f'href="{PUBLIC}{PAGE}/notice.pdf"' in html
        assert "<strong>Share this message:</strong>" in html


def restricted(workdir: Path, reference: str = "BR-RESTRICTED-1") -> None:
    source = (workdir / "messages" / "eu-referendum.md").read_text(encoding="utf-8")
    source = source.replace(f"reference: {REFERENCE}", f"reference: {reference}\npublic: false")
    (workdir / "messages" / "restricted.md").write_text(source, encoding="utf-8")


def test_public_false_leaves_the_share_line_out_and_has_no_page(workdir, cli, env, server):
    restricted(workdir)
    cli("send", "restricted", "--yes")
    for mail in emails(workdir, 1):
        text, html = parts(mail)
        assert "Share this message" not in text and "Share this message" not in html
        assert "/m/" not in text and "/m/" not in html
    assert get(server, "/m/BR-RESTRICTED-1").status_code == 404
    assert get(server, "/m/BR-RESTRICTED-1/notice.pdf").status_code == 404
    result = cli("publish", "restricted", expect=1)
    assert "public: false" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_placeholder_without_a_fallback_is_a_problem_only_for_a_public_message(workdir, cli):
    path = workdir / "messages" / "hello.md"
    front = "---\nsubject: Hello\nfrom: p@example.org\nreference: BR-HELLO\n"
    path.write_text(front + "---\nDear {{ first_name }},\n", encoding="utf-8")
    problem = cli("check", "hello", expect=1).stderr
    assert "messages/hello.md:6: {{ first_name }} has no fallback" in problem
    assert "'public: false'" in problem
    path.write_text(front + "public: false\n---\nDear {{ first_name }},\n", encoding="utf-8")
    cli("check", "hello")


# --- the page ----------------------------------------------------------------------------------


def test_the_page_and_its_notice_hold_no_contact_field_and_no_token(workdir, sent, server):
    response = get(server, PAGE)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    page = response.text
    assert "<h1>Key messages from the Borough Commander: we stand together</h1>" in page
    assert REFERENCE in page and "sent " in page
    assert "Dear Co-ordinator," in page
    assert not re.search(r"<(img|script|iframe|link|object)\b", page)
    assert "unsubscribe" not in page.lower() and "?t=" not in page
    pdf = get(server, PAGE + "/notice.pdf")
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == "application/pdf"
    pages, text = pdf_text(pdf.content)
    assert pages == 1 and REFERENCE in text
    secrets_ = tokens(sent) | {SECRET}
    source = (workdir / "messages" / "eu-referendum.md").read_text(encoding="utf-8")
    for where in (page, text):
        assert leaks(where, sample_values(workdir), source) == []
        assert not [t for t in secrets_ if t in where]


def test_the_page_shows_what_was_sent_not_a_later_edit(workdir, sent, server, cli):
    message = workdir / "messages" / "eu-referendum.md"
    message.write_text(
        message.read_text(encoding="utf-8").replace("we stand together", "EDITED LATER"),
        encoding="utf-8",
    )
    page = get(server, PAGE).text
    assert "we stand together" in page and "EDITED LATER" not in page
    cli("publish", "eu-referendum", "-o", "site")
    written = (workdir / "site" / "index.html").read_text(encoding="utf-8")
    assert "we stand together" in written and "EDITED LATER" not in written


def test_unpublish_gives_410_with_a_page_and_publish_puts_it_back(workdir, sent, server, cli):
    result = cli("unpublish", REFERENCE)
    assert result.stdout.startswith(f"Withdrew {REFERENCE}")
    gone = get(server, PAGE)
    assert gone.status_code == 410 and gone.headers["Content-Type"].startswith("text/html")
    assert "This message has been withdrawn" in gone.text and REFERENCE in gone.text
    assert get(server, PAGE + "/notice.pdf").status_code == 410
    again = cli("publish", "eu-referendum")
    assert again.stdout == f"Published {REFERENCE}: {PUBLIC}{PAGE}\n"
    assert get(server, PAGE).status_code == 200


def test_unknown_references_and_unsent_messages_are_plain_errors(workdir, cli, env, server):
    assert get(server, "/m/BR-NO-SUCH").status_code == 404
    unsent = cli("publish", "eu-referendum", expect=1)
    assert "not sent yet" in unsent.stderr and "Traceback" not in unsent.stderr
    unknown = cli("unpublish", "BR-NO-SUCH", expect=1)
    assert unknown.stderr.startswith("Error: BR-NO-SUCH: no public page has this reference")


def ledger(workdir: Path) -> dict[str, list]:
    db = sqlite3.connect(workdir / "bulletin.db")
    try:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("sends", "deliveries", "suppressions", "publications", "sent_sources")
        }
    finally:
        db.close()


def test_opening_a_page_never_changes_state(workdir, sent, server, cli):
    before = ledger(workdir)
    for path in (PAGE, PAGE + "/notice.pdf", "/m/BR-NO-SUCH"):
        for method in ("GET", "HEAD"):
            get(server, path, method)
    assert get(server, PAGE, "POST").status_code == 405
    assert ledger(workdir) == before
    cli("unpublish", REFERENCE)
    withdrawn = ledger(workdir)
    for method in ("GET", "HEAD", "POST"):
        get(server, PAGE, method)
    assert ledger(workdir) == withdrawn


def test_publish_writes_static_files_for_the_boroughs_website(workdir, sent, cli):
    result = cli("publish", "eu-referendum", "-o", "site/br")
    index, notice = workdir / "site" / "br" / "index.html", workdir / "site" / "br" / "notice.pdf"
    assert f"Wrote {index.relative_to(workdir)}" in result.stdout
    page = index.read_text(encoding="utf-8")
    assert 'href="notice.pdf"' in page and "Content-Security-Policy" in page
    pages, text = pdf_text(notice.read_bytes())
    assert pages == 1 and "We stand together against hate crime" in text


# --- the property: nobody's details, whatever the message says --------------------------------

WORDS = ["Please", "report", "hate", "crime", "to", "101.", "Thank", "you", "neighbours"]
COLUMNS = ["email", "first_name", "last_name", "ward", "role", "scheme", "phone", "address"]
COLUMNS += ["postcode", "forename", "Surname", "EMAIL", "telephone", "postaladdress"]
segment = st.one_of(
    st.sampled_from(WORDS),
    st.builds(
        lambda column, fallback: f'{{{{ {column} or "{fallback}" }}}}',
        st.sampled_from(COLUMNS),
        st.sampled_from(["Neighbour", "Friend", "everyone"]),
    ),
)
line = st.lists(segment, min_size=1, max_size=8).map(" ".join)


@hypothesis_settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(subject=line, opening=line, points=st.lists(line, min_size=0, max_size=4))
def test_no_sample_contacts_field_reaches_the_page_or_its_pdf(settings, subject, opening, points):
    """For every sample contact: none of its field values is on the page or in the notice."""
    source = (
        f"---\nsubject: '{subject}'\nfrom: p@example.org\nreference: BR-PROP\n---\n"
        f"{opening}\n\n" + "".join(f"- {point}\n" for point in points)
    ).encode()
    message = sent_message(settings, "prop", source)
    publication = Publication("BR-PROP", "prop", 1, "0" * 64, "2016-07-04T06:30:00+00:00", "", None)
    page = render_page(settings, publication, message, notice_href="BR-PROP/notice.pdf")
    _, text = pdf_text(render_notice(settings, publication, message))
    values = sample_values(settings.workdir)
    assert leaks(page, values) == [] and leaks(text, values) == []
    assert "{{" not in page and "{{" not in text


# --- the unsubscribe page, forwarded -----------------------------------------------------------


def test_the_unsubscribe_page_says_whose_it_is_and_what_a_forwardee_should_do(sent, server):
    link = sent[0]["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC)
    page = get(server, link).text
    assert "This ends the subscription of <strong>m•••••r@example.org</strong>" in page
    assert "Was this email forwarded to you?" in page and "do not press the button" in page


# --- in Chromium ------------------------------------------------------------------------------


def test_the_pages_are_accessible_and_fit_a_phone(workdir, sent, server, cli, page):
    for width in (375, 1280):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(server.url + PAGE)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        save_screenshot(page, f"public-page-{width}")
        assert_accessible(page)
    link = page.get_attribute("a[href$='notice.pdf']", "href")
    assert get(server, urlsplit(page.url).path.rsplit("/", 1)[0] + "/" + link).status_code == 200
    cli("publish", "eu-referendum", "-o", "site")
    page.goto((workdir / "site" / "index.html").as_uri())
    assert_accessible(page)
    cli("unpublish", REFERENCE)
    page.goto(server.url + PAGE)
    save_screenshot(page, "public-page-withdrawn")
    assert_accessible(page)
    page.goto(server.url + sent[0]["List-Unsubscribe"].strip("<>").removeprefix(PUBLIC))
    save_screenshot(page, "unsubscribe-confirm")
    assert_accessible(page)
    assert [e for e in page.console_errors if "410 (Gone)" not in e] == []
