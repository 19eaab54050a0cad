"""`bulletin print`: A4 letters for postal-only contacts, or a notice; PDFs opened with pypdf."""

from __future__ import annotations

import io
import re

from pypdf import PdfReader

from bulletin.check import check_message
from bulletin.render import render_pdf


def pages_of(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def page_numbers(pages: list[str]) -> list[tuple[int, int]]:
    found = []
    for text in pages:
        (match,) = re.findall(r"Page (\d+) of (\d+)", text)
        found.append((int(match[0]), int(match[1])))
    return found


def test_letters_for_every_postal_only_contact(workdir, cli):
    result = cli("print", "eu-referendum")
    data = (workdir / "eu-referendum-letters.pdf").read_bytes()
    assert result.stdout.strip() == (
        f"Wrote eu-referendum-letters.pdf: 2 letter(s) ({len(data):,} bytes)"
    )
    pages = pages_of(data)
    numbers = page_numbers(pages)
    # Each letter's pages are numbered from 1.
    assert numbers[0] == (1, numbers[0][1])
    first_length = numbers[0][1]
    assert numbers == [(n, first_length) for n in range(1, first_length + 1)] * 2
    first, second = "\n".join(pages[:first_length]), "\n".join(pages[first_length:])
    # Eileen Hughes, 14 Kingswood Road, Penge, London SE20 7BN (contacts/coordinators.csv:5)
    for line in ("Eileen Hughes", "14 Kingswood Road", "Penge", "London", "SE20 7BN"):
        assert line in first
    assert "Dear Eileen," in first and "Harold" not in first
    for line in ("Harold Bennett", "8 Lynwood Grove", "Orpington", "BR6 0BG"):
        assert line in second
    assert "Dear Harold," in second
    for letter in (first, second):
        assert "BR-2016-07-01" in letter
        assert "Key messages from the Borough Commander" in letter
        assert "Metropolitan Police Service" in letter


def test_the_address_block_lines_are_in_order(workdir, settings):
    checked = check_message("eu-referendum", settings)
    eileen = next(c for c in checked.postal if c.first_name == "Eileen")
    text = pages_of(render_pdf(checked.compiled, [eileen], settings.workdir))[0]
    # "14 Kingswood Road, Penge, London" is split at its commas, one line each.
    assert "Eileen Hughes\n14 Kingswood Road\nPenge\nLondon\nSE20 7BN" in text


def test_no_postal_contacts_in_the_audience(workdir, cli):
    (workdir / "messages" / "palace.md").write_text(
        "---\nsubject: Crystal Palace\nfrom: p@example.org\n"
        "audience:\n  ward: [Crystal Palace]\n---\nHello\n",
        encoding="utf-8",
    )
    result = cli("print", "palace", expect=1)
    assert result.stderr.strip() == (
        "Error: messages/palace.md: no postal-only contacts in the audience (they have address "
        "and postcode but no email); use --notice for a notice-board version"
    )
    assert list(workdir.glob("*.pdf")) == []


def test_print_respects_the_audience(workdir, cli):
    (workdir / "messages" / "orpington.md").write_text(
        "---\nsubject: Orpington\nfrom: p@example.org\naudience:\n  ward: [Orpington]\n---\n"
        "Dear {{ first_name }},\n",
        encoding="utf-8",
    )
    result = cli("print", "orpington", "-o", "o.pdf")
    assert "1 letter(s)" in result.stdout
    text = "\n".join(pages_of((workdir / "o.pdf").read_bytes()))
    assert "Harold Bennett" in text and "Eileen" not in text


def test_a_broken_print_template_is_a_clear_error(workdir, cli):
    (workdir / "templates" / "print.html").write_text(
        "<html>\n{{ letters | nosuchfilter }}\n</html>\n", encoding="utf-8"
    )
    result = cli("print", "eu-referendum", expect=1)
    assert "templates/print.html:2: template error" in result.stderr
    assert "Traceback" not in result.output


def test_each_letter_carries_its_own_recipients_subject(workdir, settings):
    path = workdir / "messages" / "eu-referendum.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        re.sub(
            r"^subject: .*$",
            'subject: "A note for {{ first_name }}"',
            text,
            count=1,
            flags=re.MULTILINE,
        ),
        encoding="utf-8",
    )
    checked = check_message("eu-referendum", settings)
    pages = pages_of(render_pdf(checked.compiled, checked.postal, settings.workdir))
    eileen = next(i for i, p in enumerate(pages) if "Eileen Hughes" in p)
    harold = next(i for i, p in enumerate(pages) if "Harold Bennett" in p)
    assert "A note for Eileen" in pages[eileen] and "A note for Harold" not in pages[eileen]
    assert "A note for Harold" in pages[harold] and "A note for Eileen" not in pages[harold]
