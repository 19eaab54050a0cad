"""`bulletin print --notice`: one A4 page for a notice board (issue 15), measured in the PDF."""

from __future__ import annotations

import re

import pdfplumber
import pytest

from bulletin.notice import derive_notice, parse_notice


def notice_pages(workdir):
    with pdfplumber.open(workdir / "notice.pdf") as document:
        return [(page.height, page.chars, page.extract_text()) for page in document.pages]


def remove_notice_front_matter(workdir) -> None:
    path = workdir / "messages" / "eu-referendum.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"^notice:\n(?:  .*\n)+", "", text, flags=re.MULTILINE), "utf-8")
    assert "notice:" not in path.read_text(encoding="utf-8")


def sizes_of(chars, words: str) -> set[float]:
    """Type sizes of the characters spelling `words` (first occurrence on the page)."""
    text = "".join(c["text"] for c in chars)
    start = text.index(words.replace(" ", ""))
    return {round(c["size"], 1) for c in chars[start : start + len(words.replace(" ", ""))]}


def top_of(chars, words: str) -> float:
    text = "".join(c["text"] for c in chars)
    return chars[text.index(words.replace(" ", ""))]["top"]


def check_notice(workdir, headline: str, point: str) -> str:
    ((height, chars, text),) = notice_pages(workdir)  # one page
    chars = [c for c in chars if c["text"].strip()]
    assert min(sizes_of(chars, headline)) >= 36
    assert sizes_of(chars, point) <= {18.0, 19.0, 20.0} and sizes_of(chars, point)
    # The reporting numbers: large, in the top half, above the key messages.
    for number in ("999", "101", "0800555111"):
        assert min(sizes_of(chars, number)) >= 24
        assert top_of(chars, number) < height / 2
        assert top_of(chars, number) < top_of(chars, point)
    # The reference: small, at the foot.
    assert max(sizes_of(chars, "BR-2016-07-01")) <= 10
    assert top_of(chars, "BR-2016-07-01") > height * 0.9
    assert "Crimestoppers" in text
    for absent in ("Dear", "Co-ordinator", "circulate", "Page 1"):
        assert absent not in text
    return text


def test_the_example_notice_is_one_page(workdir, cli):
    result = cli("print", "eu-referendum", "--notice", "-o", "notice.pdf")
    assert result.stdout.startswith("Wrote notice.pdf: an A4 notice")
    text = check_notice(
        workdir,
        "We stand together against hate crime",
        "Hate crime is not acceptable",
    )
    assert "#westandtogether" in text


def test_a_notice_is_derived_from_the_bullets_when_the_message_has_none(workdir, cli):
    remove_notice_front_matter(workdir)
    cli("print", "eu-referendum", "--notice", "-o", "notice.pdf")
    text = check_notice(
        workdir,
        "Key messages from the Borough Commander",
        "We are aware that significant events",
    )
    assert "Dear Co-ordinator" not in text


def test_a_notice_too_long_for_one_page_is_refused(workdir, cli):
    path = workdir / "messages" / "eu-referendum.md"
    text = path.read_text(encoding="utf-8")
    points = "".join(f'    - "Point {n}: {"a long sentence " * 12}"\n' for n in range(8))
    text = re.sub(r"^  points:\n(?:    - .*\n)+", f"  points:\n{points}", text, flags=re.MULTILINE)
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("notice:") + 1
    result = cli("print", "eu-referendum", "--notice", "-o", "notice.pdf", expect=1)
    assert result.stderr.startswith(
        f"Error: messages/eu-referendum.md:{line}: the notice needs 2 pages, not one A4 page"
    )
    assert not (workdir / "notice.pdf").exists()


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("text", "notice must be 'headline: …' and 'points:'"),
        ({"headline": "x", "colour": "red"}, "notice must be"),
        ({"points": [{"a": 1}]}, "notice: each of the points must be one sentence"),
    ],
)
def test_a_malformed_notice_is_reported(value, error):
    notice, problem = parse_notice(value)
    assert notice is None and problem.startswith(error)


def test_a_bad_notice_key_is_a_check_problem_with_its_line(workdir, cli):
    path = workdir / "messages" / "eu-referendum.md"
    text = path.read_text(encoding="utf-8").replace("  headline:", "  headlin:", 1)
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("notice:") + 1
    result = cli("check", "eu-referendum", expect=1)
    assert f"messages/eu-referendum.md:{line}: notice must be" in result.stderr


def test_derived_points_are_the_first_sentence_of_each_item_of_the_first_list():
    body = (
        "<p>Hello. Please circulate.</p><ul><li>One. More detail.</li>"
        "<li><p>Two “quoted”? Yes.</p><ul><li>nested</li></ul></li></ul><ul><li>Later</li></ul>"
    )
    assert derive_notice("  A   headline ", body).points == ("One.", "Two “quoted”?")
    assert derive_notice("A headline", body).headline == "A headline"
