"""`bulletin preview`: HTML, text, PDF and the full .eml for one contact, with no credentials."""

from __future__ import annotations

import io
import re
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime

import pytest

ZOE = "zoe.lefevre@example.org"


def as_email(data: bytes):
    return message_from_bytes(data, policy=policy.default)


def pdf_text(data: bytes) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


# --- html and text -----------------------------------------------------------------------------


def test_html_to_stdout_for_the_first_contact_by_default(workdir, cli):
    result = cli("preview", "eu-referendum")
    assert result.stdout.startswith("<!DOCTYPE html>")
    assert ">Dear Margaret,</p>" in result.stdout  # first row of contacts/coordinators.csv
    assert result.stderr == ""


def test_html_for_a_named_contact_any_case(workdir, cli):
    result = cli("preview", "eu-referendum", "--contact", "Zoe.Lefevre@EXAMPLE.org")
    assert ">Dear Zoë,</p>" in result.stdout
    assert "zoe.lefevre@example.org is registered" in result.stdout


def test_text_has_the_subject_then_the_letter(workdir, cli):
    result = cli("preview", "eu-referendum", "-f", "text", "--contact", "david.oneill@example.com")
    assert result.stdout.startswith(
        "Subject: Key messages from the Borough Commander: we stand together\n\n"
    )
    assert "Dear David,\n" in result.stdout
    assert "\n* We are aware" in result.stdout


def test_output_file(workdir, cli):
    result = cli("preview", "eu-referendum", "--format", "html", "-o", "out.html")
    data = (workdir / "out.html").read_bytes()
    assert data.startswith(b"<!DOCTYPE html>")
    assert result.stderr == ""
    assert result.stdout.strip() == f"Wrote out.html ({len(data):,} bytes)"


def test_a_bare_name_or_a_path(workdir, cli):
    by_name = cli("preview", "eu-referendum", "-f", "text").stdout
    assert cli("preview", "messages/eu-referendum.md", "-f", "text").stdout == by_name


def test_unknown_contact(workdir, cli):
    result = cli("preview", "eu-referendum", "--contact", "nobody@example.org", expect=1)
    assert result.stderr.strip() == (
        "Error: --contact nobody@example.org: no such address in coordinators.csv"
    )


def test_unknown_format_is_a_usage_error(workdir, cli):
    result = cli("preview", "eu-referendum", "--format", "docx", expect=2)
    assert "docx" in result.stderr


def test_missing_message(workdir, cli):
    result = cli("preview", "nope", expect=1)
    assert "messages/nope.md: no such message" in result.stderr


def test_a_message_with_problems_is_previewed_with_warnings(workdir, cli):
    (workdir / "contacts" / "extra.csv").write_bytes(b"email,first_name\nnot-an-address,Bob\n")
    result = cli("preview", "eu-referendum", "-f", "text")
    assert "Dear Margaret," in result.stdout
    assert result.stderr.startswith("warning: contacts/extra.csv:2: 'not-an-address'")


def test_a_message_that_cannot_compile_is_not_previewed(workdir, cli):
    (workdir / "templates" / "email.html").write_text("{% if %}\n", encoding="utf-8")
    result = cli("preview", "eu-referendum", expect=1)
    assert result.stdout == ""
    assert result.stderr.startswith("templates/email.html:1: template error")
    assert "nothing was rendered" in result.stderr


def test_preview_needs_no_credentials_and_leaves_no_database(workdir, cli):
    cli("preview", "eu-referendum", "-f", "eml", "-o", "x.eml")
    assert not (workdir / "bulletin.db").exists()
    assert not (workdir / "outbox").exists()


# --- eml ---------------------------------------------------------------------------------------


@pytest.fixture
def eml(workdir, cli) -> bytes:
    cli("preview", "eu-referendum", "-f", "eml", "--contact", ZOE, "-o", "z.eml")
    return (workdir / "z.eml").read_bytes()


def test_eml_is_multipart_alternative_utf8(eml):
    mail = as_email(eml)
    assert mail.get_content_type() == "multipart/alternative"
    parts = list(mail.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
    assert "Dear Zoë," in parts[0].get_content()
    assert ">Dear Zoë,</p>" in parts[1].get_content()
    assert "I’m writing" in parts[0].get_content()


IDENTITY = "Metropolitan Police Service, Bromley Borough"


def test_eml_headers(eml):
    mail = as_email(eml)
    assert mail["From"] == (  # the example names no sender: the masthead's name (issue 15)
        f'"{IDENTITY}" <bromley.neighbourhoods@example.org>'
    )
    assert mail["To"] == "Zoë Lefèvre <zoe.lefevre@example.org>"
    assert mail["Reply-To"] == "Bromley Safer Neighbourhoods <bromley.snt@example.org>"
    assert mail["Subject"] == "Key messages from the Borough Commander: we stand together"
    assert parsedate_to_datetime(mail["Date"]).tzinfo is not None
    assert re.fullmatch(r"<[^@<>\s]+@example\.org>", mail["Message-ID"])
    assert mail["List-Unsubscribe"] == "<https://example.org/unsubscribe?t=preview>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["X-Bulletin-Reference"] == "BR-2016-07-01"
    assert mail["MIME-Version"] == "1.0"


def test_eml_wire_format(eml):
    assert eml.count(b"\n") == eml.count(b"\r\n")  # CRLF line ends throughout
    header_block, body = eml.split(b"\r\n\r\n", 1)
    unsubscribe = [ln for ln in header_block.split(b"\r\n") if ln.startswith(b"List-Unsubscribe:")]
    assert unsubscribe == [b"List-Unsubscribe: <https://example.org/unsubscribe?t=preview>"]
    assert b"=?utf-8?" in header_block  # the non-ASCII display name is encoded
    assert all(len(line) <= 76 for line in body.split(b"\r\n")), "quoted-printable lines ≤ 76"
    assert all(byte < 128 for byte in eml)


def test_eml_long_unsubscribe_url_stays_on_one_line(workdir, cli, monkeypatch):
    url = "https://bulletin.example.org/" + "a" * 150
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", url)
    cli("preview", "eu-referendum", "-f", "eml", "-o", "z.eml")
    headers = (workdir / "z.eml").read_bytes().split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    (line,) = [h for h in headers if h.startswith(b"List-Unsubscribe:")]
    assert line == f"List-Unsubscribe: <{url}/unsubscribe?t=preview>".encode()


def test_eml_for_a_postal_only_contact_is_refused(workdir, cli):
    (workdir / "contacts" / "coordinators.csv").write_bytes(
        b"email,first_name,last_name,address,postcode\n,Harold,Bennett,8 Lynwood Grove,BR6 0BG\n"
    )
    result = cli("preview", "eu-referendum", "-f", "eml", expect=1)
    assert "eml needs a contact with an email address" in result.stderr


# --- header injection ---------------------------------------------------------------------------


def test_crlf_in_a_contact_name_keeps_the_contact_out(workdir, cli):
    (workdir / "contacts" / "coordinators.csv").write_bytes(
        b"email,first_name,last_name\n"
        b'ann@example.org,"Ann\r\nBcc: victim@example.com",Lee\n'
        b"bob@example.org,Bob,Jones\n"
    )
    check = cli("check", "eu-referendum", expect=1)
    assert "contacts/coordinators.csv:2: first_name contains a line break" in check.stderr
    result = cli("preview", "eu-referendum", "-f", "eml", "--contact", "ann@example.org", expect=1)
    assert "no such address" in result.stderr
    cli("preview", "eu-referendum", "-f", "eml", "-o", "bob.eml")
    assert b"victim" not in (workdir / "bob.eml").read_bytes()


def test_crlf_in_a_field_used_in_the_subject_is_refused(workdir, cli):
    (workdir / "messages" / "s.md").write_text(
        "---\nsubject: News for {{ ward }}\nfrom: p@example.org\n---\nHi\n", encoding="utf-8"
    )
    (workdir / "contacts" / "coordinators.csv").write_bytes(
        b'email,first_name,ward\nann@example.org,Ann,"Penge\r\nBcc: victim@example.com"\n'
    )
    result = cli("preview", "s", "-f", "eml", "-o", "x.eml", expect=1)
    assert "contacts/coordinators.csv:2: ward contains a line break" in result.stderr
    assert result.stderr.rstrip().endswith(
        "Error: contacts/coordinators.csv:2: a field used in the subject contains a line break"
    )
    assert not (workdir / "x.eml").exists()
    check = cli("check", "s", expect=1)
    assert "ward contains a line break and is used in the subject" in check.stderr


def test_hostile_names_are_encoded_not_injected(workdir, cli):
    (workdir / "contacts" / "coordinators.csv").write_bytes(
        b'email,first_name,last_name\nann@example.org,"Ann <evil@example.com>, Bcc:","x"\n'
    )
    cli("preview", "eu-referendum", "-f", "eml", "-o", "x.eml")
    mail = as_email((workdir / "x.eml").read_bytes())
    assert [a.addr_spec for a in mail["To"].addresses] == ["ann@example.org"]
    assert mail["Bcc"] is None


# --- pdf ---------------------------------------------------------------------------------------


def test_pdf_to_a_file(workdir, cli):
    cli("preview", "eu-referendum", "-f", "pdf", "--contact", ZOE, "-o", "z.pdf")
    data = (workdir / "z.pdf").read_bytes()
    assert data.startswith(b"%PDF-")
    pages, text = pdf_text(data)
    assert pages == 3  # 12 pt type (issue 15)
    assert "Zoë Lefèvre" in text  # the name block
    assert "Dear Zoë," in text
    assert "Page 1 of 3" in text and "Page 3 of 3" in text
    assert "BR-2016-07-01" in text
    assert "Key messages from the Borough Commander" in text


def test_pdf_to_stdout_when_it_is_not_a_terminal(workdir, cli):
    result = cli("preview", "eu-referendum", "-f", "pdf")
    assert result.stdout_bytes.startswith(b"%PDF-")
