"""Letters (issue 15): the address window, refused letters, duplex, reply details; in the PDF."""

from __future__ import annotations

import io
import re

import pdfplumber
import pytest
from pypdf import PdfReader

from bulletin.address import (
    MAX_LINES,
    MM,
    SMALLEST,
    WINDOW_HEIGHT,
    WINDOW_LEFT,
    WINDOW_TOP,
    WINDOW_WIDTH,
    fit_address,
)
from bulletin.check import check_message
from bulletin.render import render_pdf

# 60 characters each, long words included.
LONG = [
    "Flat 12 Featherstonehaugh Court, 147 Marjoribanks Street Eas",
    "The Old Rectory Annexe behind St Bartholomew-the-Less Church",
    "Cholmondeley-Fotheringham Gardens and Kingswood Road Estates",
]
SHORT = ["14 Kingswood Road", "Penge", "London", "Anerley", "Bromley", "Kent"]


def write_postal(workdir, rows: list[tuple[str, str, str]]) -> None:
    """A message whose audience is one postal-only list: (name, address, postcode) rows."""
    lines = ["first_name,address,postcode"]
    for name, address, postcode in rows:
        lines.append(f'{name},"{address}",{postcode}')
    (workdir / "contacts" / "postal.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (workdir / "messages" / "letter.md").write_text(
        "---\nsubject: A letter\nfrom: p@example.org\ncontacts: contacts/postal.csv\n---\n"
        "Dear {{ first_name }},\n\nA short letter.\n",
        encoding="utf-8",
    )


def window_words(pdf: bytes, page_number: int = 0) -> tuple[list[dict], list[dict]]:
    """Words in the address area of a page, and those of them outside the window box."""
    with pdfplumber.open(io.BytesIO(pdf)) as document:
        words = document.pages[page_number].extract_words()
    left, top = WINDOW_LEFT * MM, WINDOW_TOP * MM
    right, bottom = left + WINDOW_WIDTH * MM, top + WINDOW_HEIGHT * MM
    # Everything left of the date column between the letterhead and the subject.
    area = [w for w in words if 40 * MM < w["top"] < 92 * MM and w["x0"] < 120 * MM]
    outside = [
        w
        for w in area
        if w["x0"] < left or w["x1"] > right or w["top"] < top or w["bottom"] > bottom
    ]
    return area, outside


@pytest.mark.parametrize(
    "address",
    [
        *[SHORT[:n] for n in range(1, 6)],  # with the name and postcode: 3 to 7 lines
        LONG,
        LONG[:2] + SHORT[:2],
        ["Featherstonehaugh-Cholmondeley-Fotheringham House, 1 Road"],
    ],
    ids=lambda a: f"{len(a)}x{max((len(x) for x in a), default=0)}",
)
def test_every_address_line_lies_inside_the_window(workdir, settings, address):
    write_postal(workdir, [("Ada", ", ".join(address), "SE20 7BN")])
    checked = check_message("letter", settings)
    assert checked.letter_problems == []
    pdf = render_pdf(checked.compiled, checked.postal, settings.workdir)
    area, outside = window_words(pdf)
    assert outside == []
    printed = " ".join(w["text"] for w in area).replace("- ", "-")  # wrapped at a hyphen
    for line in ["Ada", *address, "SE20 7BN"]:
        for word in line.replace(",", " ").split():
            assert word in printed, (word, printed)
    assert area[-1]["text"] == "7BN"  # postcode last


def test_a_block_without_a_name_is_the_address_and_postcode(workdir, settings):
    write_postal(workdir, [("", "1 Road", "SE20 7BN")])
    checked = check_message("letter", settings)
    pdf = render_pdf(checked.compiled, checked.postal, settings.workdir)
    area, outside = window_words(pdf)
    assert [w["text"] for w in area] == ["1", "Road", "SE20", "7BN"] and outside == []


def test_fit_shrinks_type_then_wraps_and_never_drops_a_line():
    eileen = fit_address(["Eileen Hughes", "14 Kingswood Road", "Penge", "London"], "SE20 7BN")
    assert eileen.size == 12
    seven = fit_address(["Ada Lovelace", *SHORT[:5]], "se20  7bn")
    assert seven.ok and seven.size < 12 and len(seven.lines) == 7
    assert seven.lines[-1].text == "SE20 7BN" and seven.lines[-1].postcode
    assert [line.text for line in fit_address(["Ada"], "").lines] == ["Ada"]  # one line
    wrapped = fit_address([LONG[0]], "SE20 7BN")
    assert wrapped.ok and len(wrapped.lines) > 2
    assert " ".join(line.text for line in wrapped.lines) == LONG[0] + " SE20 7BN"


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (["Ada", *SHORT], f"has 8 lines; an envelope window takes at most {MAX_LINES}"),
        ([*LONG, *LONG], f"does not fit the envelope window even at {SMALLEST:g} pt"),
        (["W" * 45], "does not fit"),
    ],
)
def test_addresses_that_cannot_fit_are_refused_with_a_reason(lines, reason):
    fit = fit_address(lines, "SE20 7BN")
    assert not fit.ok and reason in fit.problem and fit.lines == ()


def test_check_and_print_refuse_an_eight_line_address_by_file_and_line(workdir, cli):
    write_postal(
        workdir,
        [
            ("Ada", "1 Short Road, London", "SE20 7BN"),
            ("Bea", ", ".join(SHORT), "BR6 0BG"),  # name + 6 + postcode = 8 lines
            ("Cy", "2 Short Road, London", "SE20 8AA"),
        ],
    )
    result = cli("check", "letter", expect=1)
    assert "contacts/postal.csv:3: letter refused: the address has 8 lines" in result.stderr
    assert "postal.csv:2" not in result.stderr and "postal.csv:4" not in result.stderr

    result = cli("print", "letter", "-o", "letters.pdf", expect=1)
    assert "contacts/postal.csv:3: letter refused: the address has 8 lines" in result.stderr
    assert "1 letter(s) not printed" in result.stderr
    assert "Wrote letters.pdf: 2 letter(s)" in result.stdout
    text = "\n".join(p.extract_text() for p in PdfReader(workdir / "letters.pdf").pages)
    assert "Dear Ada," in text and "Dear Cy," in text and "Bea" not in text


def test_print_writes_nothing_when_every_letter_is_refused(workdir, cli):
    write_postal(workdir, [("Bea", ", ".join(SHORT), "BR6 0BG")])
    result = cli("print", "letter", "-o", "letters.pdf", expect=1)
    assert "contacts/postal.csv:2: letter refused" in result.stderr
    assert not (workdir / "letters.pdf").exists()


def test_an_unfit_postal_address_does_not_stop_an_email_send(workdir, cli):
    (workdir / "contacts" / "more.csv").write_text(
        f'first_name,address,postcode\nBea,"{", ".join(SHORT)}",BR6 0BG\n', encoding="utf-8"
    )
    result = cli("send", "eu-referendum", "--dry-run")
    assert "rendered 34 message(s)" in result.stdout


def test_duplex_gives_odd_letters_a_blank_back_page(workdir, cli):
    cli("print", "eu-referendum", "-o", "simplex.pdf")
    cli("print", "eu-referendum", "--duplex", "-o", "duplex.pdf")
    simplex = PdfReader(workdir / "simplex.pdf").pages
    duplex = PdfReader(workdir / "duplex.pdf").pages
    per_letter = len(simplex) // 2
    assert per_letter % 2 == 1  # the example's letters are 3 pages long
    assert len(duplex) == 2 * (per_letter + 1)
    texts = [p.extract_text().strip() for p in duplex]
    assert texts[per_letter] == "" and texts[-1] == ""
    assert "Dear Harold," in texts[per_letter + 1]  # the second letter starts a new sheet


def test_reply_address_and_phone_are_printed_when_set(workdir, cli, monkeypatch):
    monkeypatch.setenv("BULLETIN_POSTAL_ADDRESS", "Bromley Police Station, 13 High Street, BR1 1ER")
    monkeypatch.setenv("BULLETIN_PHONE", "020 7946 0999")
    cli("print", "eu-referendum", "-o", "letters.pdf")
    cli("print", "eu-referendum", "--notice", "-o", "notice.pdf")
    letter = PdfReader(workdir / "letters.pdf").pages[0].extract_text()
    assert "13 High Street" in letter and "Telephone 020 7946 0999" in letter
    text = "\n".join(p.extract_text() for p in PdfReader(workdir / "letters.pdf").pages)
    assert "To reply: write to Bromley Police Station, 13 High Street, BR1 1ER" in " ".join(
        text.split()
    )
    notice = PdfReader(workdir / "notice.pdf").pages[0].extract_text()
    assert "13 High Street" in notice and "020 7946 0999" in notice


def test_letter_type_is_at_least_12_pt_and_the_closing_note_too(workdir, cli):
    cli("print", "eu-referendum", "-o", "letters.pdf")
    with pdfplumber.open(workdir / "letters.pdf") as document:
        chars = [c for page in document.pages[:3] for c in page.chars]
    body = [c for c in chars if c["top"] > 100 * MM and c["top"] < 270 * MM]
    sizes = {round(c["size"], 1) for c in body}
    assert min(sizes) >= 12, sizes
    text = "".join(c["text"] for c in chars)
    start = text.index("To report a crime")
    note = chars[start : start + 80]
    assert {round(c["size"], 1) for c in note} == {12.0}


def test_every_word_of_the_example_survives_into_each_letter_in_order(workdir, cli):
    cli("print", "eu-referendum", "-o", "letters.pdf")
    pages = [p.extract_text() for p in PdfReader(workdir / "letters.pdf").pages]
    letter = " ".join(pages[: len(pages) // 2]).split()
    body = (workdir / "messages" / "eu-referendum.md").read_text(encoding="utf-8")
    body = body.split("\n---\n", 1)[1].replace('{{ first_name or "Co-ordinator" }}', "Eileen")
    for paragraph in re.split(r"\n\s*\n", body):
        words = re.sub(r"^\s*(?:[-*]|>)\s?", "", paragraph, flags=re.MULTILINE).split()
        remaining = iter(letter)  # page furniture may come between, but not a lost word
        missing = [w for w in words if not any(w == seen for seen in remaining)]
        assert not missing, (paragraph[:60], missing[:5])
