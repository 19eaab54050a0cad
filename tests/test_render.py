"""Rendering: the example letter faithfully, personalisation safely, each message compiled once."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from bulletin.check import check_message
from bulletin.contacts import Contact
from bulletin.markup import html_to_text, link_phone_numbers, markdown_to_html
from bulletin.render import CompiledEmail, compile_email

XHTML = "{http://www.w3.org/1999/xhtml}"


def parse_html(html: str):
    import tinyhtml5

    return tinyhtml5.parse(html)


def find_all(root, tag: str) -> list:
    return list(root.iter(f"{XHTML}{tag}"))


def text_of(element) -> str:
    return "".join(element.itertext())


def content_cell(root):
    """The <td class="content"> that holds the subject heading and the message body."""
    return next(td for td in find_all(root, "td") if td.get("class") == "content")


def contact(email: str = "ann@example.org", line: int = 2, **fields: str) -> Contact:
    return Contact(email=email, fields={"email": email, **fields}, file="c.csv", line=line)


@pytest.fixture
def example(settings):
    """The packaged example, compiled once, with its audience."""
    checked = check_message("eu-referendum", settings)
    assert checked.ok, checked.problems
    return checked


@pytest.fixture
def margaret(example):
    return example.compiled.render(example.audience[0], "https://example.org/unsubscribe?t=x")


def compiled_message(settings, body: str, front: str = "") -> CompiledEmail:
    """Compile a message with this body (no contact lists involved)."""
    path = settings.workdir / "messages" / "t.md"
    path.write_text(
        f"---\nsubject: Test\nfrom: Police <p@example.org>\n{front}---\n{textwrap.dedent(body)}",
        encoding="utf-8",
    )
    checked = check_message("t", settings, include_contacts=False)
    assert checked.compiled is not None, checked.problems
    return checked.compiled


# --- the example, faithfully ------------------------------------------------------------------


def test_bullets_are_a_list_of_seven(margaret):
    cell = content_cell(parse_html(margaret.html))
    (ul,) = find_all(cell, "ul")
    items = find_all(ul, "li")
    assert len(items) == 7
    assert text_of(items[0]).startswith("We are aware that significant events")
    assert text_of(items[6]).startswith("If you have any concerns")


def test_the_statement_is_a_block_quote_of_three_paragraphs(margaret):
    cell = content_cell(parse_html(margaret.html))
    (quote,) = find_all(cell, "blockquote")
    paragraphs = find_all(quote, "p")
    assert len(paragraphs) == 3
    assert text_of(paragraphs[0]).startswith("“The EU Referendum may have divided")
    assert text_of(paragraphs[2]).endswith("report it immediately.”")


def test_curly_quotes_and_the_hashtag_are_kept(margaret):
    assert "I’m writing to you" in margaret.html
    assert "“#westandtogether” campaign" in margaret.html
    assert "nation’s diversity" in margaret.html
    for heading in ("h1", "h2", "h3", "h4", "h5", "h6"):
        for element in find_all(parse_html(margaret.html), heading):
            assert "westandtogether" not in text_of(element)
    assert "I’m writing" in margaret.text and "“#westandtogether”" in margaret.text


def test_one_heading_the_subject(margaret):
    root = parse_html(margaret.html)
    (h1,) = find_all(root, "h1")
    assert text_of(h1) == "Key messages from the Borough Commander: we stand together"
    assert [h for tag in ("h2", "h3", "h4") for h in find_all(root, tag)] == []


def test_phone_numbers_are_tel_links(margaret):
    cell = content_cell(parse_html(margaret.html))
    links = {(text_of(a), a.get("href")) for a in find_all(cell, "a")}
    assert links == {("999", "tel:999"), ("101", "tel:101"), ("0800 555111", "tel:0800555111")}


def test_every_tel_link_in_the_email_dials_a_real_reporting_number(margaret):
    hrefs = set(re.findall(r'href="(tel:[^"]*)"', margaret.html))
    assert hrefs == {"tel:999", "tel:101", "tel:0800555111"}


def test_numbers_that_are_not_phone_numbers_are_left_alone(margaret):
    assert "We have 900 specialist detectives" in margaret.html
    assert "all 32 Boroughs supporting him" in margaret.html
    assert 'href="tel:900' not in margaret.html and 'href="tel:32' not in margaret.html


def test_preheader_lang_and_title(margaret, example):
    root = parse_html(margaret.html)
    assert root.get("lang") == "en-GB"
    preheader = next(d for d in find_all(root, "div") if d.get("class") == "preheader")
    assert text_of(preheader).startswith(
        "After the EU Referendum: please share these key messages and report all hate crime."
    )
    assert "display:none" in preheader.get("style").replace(" ", "")
    assert text_of(find_all(root, "title")[0]) == example.message.subject


def test_css_is_inlined_and_media_queries_kept(margaret):
    root = parse_html(margaret.html)
    cell = content_cell(root)
    for tag in ("p", "li", "blockquote", "a"):
        elements = find_all(cell, tag)
        assert elements and all(e.get("style") for e in elements), tag
    assert "color: #1f2328" in find_all(cell, "p")[0].get("style")
    (style,) = [s for s in find_all(root, "style") if "@media" in text_of(s)]
    assert "max-width: 660px" in text_of(style)
    assert "<link" not in margaret.html  # nothing fetched


def test_footer_says_why_and_how_to_check_it_is_genuine(margaret):
    assert "Reference: <strong" in margaret.html and "BR-2016-07-01" in margaret.html
    assert "margaret.okafor@example.org is registered as a Neighbourhood Watch" in margaret.html
    assert "bromley.neighbourhoods@example.org" in margaret.html
    assert 'href="https://example.org/unsubscribe?t=x"' in margaret.html
    assert "<img" not in margaret.html  # identity as text: no remote images


def test_subject(margaret):
    assert margaret.subject == "Key messages from the Borough Commander: we stand together"


# --- the plain-text version ---------------------------------------------------------------------


def test_text_paragraphs_are_not_hard_wrapped(margaret):
    """One line per paragraph: every client wraps it to its own width (issue 15, item 5)."""
    lines = margaret.text.splitlines()
    assert "Many thanks for your continued support." in lines
    opening = next(line for line in lines if line.startswith("I’m writing"))
    assert opening.endswith("I would be grateful if you could circulate them to your contacts.")
    rules = [line for line in lines if line and set(line) <= set("=-")]
    assert rules and max(map(len, rules)) <= 24  # short enough never to wrap on a phone


def test_text_bullets_quote_and_sign_off(margaret):
    text = margaret.text
    assert text.count("\n\n* ") == 7  # a blank line between bullets
    assert "\n* We are aware that significant events at home or abroad can increase " in text
    assert "\n    “The EU Referendum may have divided public opinion" in text
    start = text.index("    “The EU Referendum")
    quoted = text[start : text.index("Many thanks")].strip("\n").splitlines()
    assert len([line for line in quoted if line]) == 3
    assert all(line.startswith("    ") for line in quoted if line)
    assert "Many thanks for your continued support.\n\nChris Hafford\nBorough Commander\nMet " in (
        text
    )
    assert text.startswith("Metropolitan Police Service, Bromley Borough\n")
    assert "with the Metropolitan Police Service, Bromley Borough." in text
    assert "Dear Margaret,\n" in text
    assert "Unsubscribe: https://example.org/unsubscribe?t=x" in text
    assert "<" not in text.split("Dear", 1)[1].split("--", 1)[0]


def test_text_subject_underline_matches_the_personalised_subject(settings):
    path = settings.workdir / "messages" / "t.md"
    path.write_text(
        "---\nsubject: News for {{ ward }}\nfrom: p@example.org\n---\nHello\n", encoding="utf-8"
    )
    checked = check_message("t", settings)
    for person in checked.audience[:3]:
        rendered = checked.compiled.render(person)
        lines = rendered.text.splitlines()
        at = lines.index(rendered.subject)
        assert lines[at + 1] == "=" * len(rendered.subject)


@pytest.mark.parametrize(
    ("markdown", "text"),
    [
        ("See [our page](https://example.org/page).", "See our page (https://example.org/page)."),
        ("See <https://example.org/page>.", "See https://example.org/page."),
        ("[Write to us](mailto:snt@example.org)", "Write to us (mailto:snt@example.org)"),
        ("Call 101.", "Call 101."),
        ("- one\n- two", "* one\n\n* two"),
        ("1. one\n2. two", "1. one\n\n2. two"),
        ("> quoted", "    quoted"),
        ("Line one  \nLine two", "Line one\nLine two"),
        ("## Section", "Section\n-------"),
        ("**bold** and *em*", "bold and em"),
        ("a\n\n---\n\nb", "a\n\n* * *\n\nb"),
    ],
)
def test_markdown_to_text(markdown, text):
    assert html_to_text(markdown_to_html(markdown)) == text + "\n"


def test_long_paragraphs_stay_on_one_line_and_item_paragraphs_hang(settings):
    words = " ".join(["neighbourhood"] * 30)
    text = html_to_text(markdown_to_html(f"{words}\n\n- {words}\n\n    {words}\n\n> {words}"))
    assert text == f"{words}\n\n* {words}\n\n  {words}\n\n    {words}\n"


def test_headings_get_short_underlines():
    text = html_to_text(markdown_to_html("# " + "Long heading " * 8 + "\n\n## Short"))
    assert text.splitlines()[1] == "=" * 24 and text.splitlines()[4] == "-" * 5


# --- Markdown → safe HTML ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "present", "absent"),
    [
        ("<script>alert(1)</script>Hi", [], ["<script", "alert(1)"]),
        ('<img src="x.png" onerror="alert(1)">', ["<img"], ["onerror"]),
        ('<a href="javascript:alert(1)">x</a>', [">x</a>"], ["javascript:"]),
        ("[x](javascript:alert(1))", [">x</a>"], ["javascript:"]),
        ('<a href="data:text/html,hi">x</a>', [], ["data:"]),
        ('<iframe src="https://example.com"></iframe>', [], ["<iframe"]),
        ("<style>body { display: none }</style>Hi", [], ["display: none", "<style"]),
        ('<p onclick="steal()">Hi</p>', ["<p>Hi</p>"], ["onclick"]),
        ('<form action="https://example.com"><input></form>', [], ["<form", "<input"]),
        ("[site](https://example.org)", ['href="https://example.org"', 'rel="noopener'], []),
    ],
)
def test_raw_html_in_the_body_is_sanitised(markdown, present, absent):
    html = markdown_to_html(markdown)
    for fragment in present:
        assert fragment in html
    for fragment in absent:
        assert fragment not in html


@pytest.mark.parametrize(
    ("html", "links"),
    [
        ("<p>Call 999 now</p>", ["tel:999"]),
        ("<p>Call 101.</p>", ["tel:101"]),
        ("<p>0800 555111</p>", ["tel:0800555111"]),
        ("<p>020 7946 0101, 07700 900123</p>", ["tel:02079460101", "tel:07700900123"]),
        ("<p>900 detectives, 32 Boroughs, in 2016, 1,999 or £999</p>", []),
        ("<p>Ref 101-A and 999.5 and v101</p>", []),
        ('<p><a href="https://example.org/999">999</a></p>', []),
        ("<pre><code>call 999</code></pre>", []),
        ("<p>0800 555 11</p>", []),  # too short for a UK number
    ],
)
def test_link_phone_numbers(html, links):
    assert re.findall(r'href="(tel:[^"]*)"', link_phone_numbers(html)) == links


# --- personalisation safety --------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "{{ 7*7 }}",
    "{% raw %}",
    "{{ ''.__class__.__mro__ }}",
    '"><img src=x onerror=alert(1)>',
    "Ann & Bob",
    "**Ann** [x](javascript:alert(1))",
    "\ue0000\ue001",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_contact_fields_appear_as_literal_text(example, name):
    person = contact(first_name=name, last_name=name)
    rendered = example.compiled.render(person)
    assert f"Dear {name}," in rendered.text
    root = parse_html(rendered.html)
    greeting = find_all(content_cell(root), "p")[0]
    assert text_of(greeting) == f"Dear {name},"
    assert not find_all(content_cell(root), "script")
    assert not any(img.get("onerror") for img in find_all(root, "img"))
    assert "49" not in text_of(greeting)


def test_hostile_fields_in_the_subject_and_preheader(settings):
    path = settings.workdir / "messages" / "s.md"
    path.write_text(
        "---\nsubject: News for {{ first_name }}\nfrom: p@example.org\n"
        "preheader: For {{ first_name }}\n---\nHi\n",
        encoding="utf-8",
    )
    compiled = check_message("s", settings, include_contacts=False).compiled
    rendered = compiled.render(contact(first_name="<b>Ann</b> & {{ x }}"))
    assert rendered.subject == "News for <b>Ann</b> & {{ x }}"
    assert "<title>News for &lt;b&gt;Ann&lt;/b&gt; &amp; {{ x }}</title>" in rendered.html
    assert "<b>Ann</b>" not in rendered.html
    assert "For &lt;b&gt;Ann&lt;/b&gt; &amp; {{ x }}" in rendered.html


@pytest.mark.parametrize(
    ("value", "href"),
    [
        ("javascript:alert(1)", ""),
        (" JavaScript:alert(1)", ""),
        ("java\tscript:alert(1)", ""),
        ("vbscript:msgbox(1)", ""),
        ("data:text/html,<script>alert(1)</script>", ""),
        ("https://example.org/elm-road", "https://example.org/elm-road"),
        ("mailto:elm@example.org", "mailto:elm@example.org"),
        ("tel:02079460101", "tel:02079460101"),
        ("/schemes/elm-road?a=1&b=2", "/schemes/elm-road?a=1&amp;b=2"),
        ('x" onmouseover="alert(1)', "x&quot; onmouseover=&quot;alert(1)"),
    ],
)
def test_a_contact_value_that_starts_a_link_cannot_choose_a_dangerous_scheme(settings, value, href):
    compiled = compiled_message(
        settings, "[Your scheme]({{ website }}) ![map]({{ website }})\n\nSee {{ website }}\n"
    )
    rendered = compiled.render(contact(website=value))
    assert f'<a href="{href}"' in rendered.html
    assert f'src="{href}"' in rendered.html
    # The same field as text is shown as it is.
    assert f"See {value}" in rendered.text
    assert "See " + value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(
        ">", "&gt;"
    ) in rendered.html.replace("&#x27;", "'")


def test_a_line_break_in_a_subject_field_is_refused(settings):
    path = settings.workdir / "messages" / "s.md"
    path.write_text(
        "---\nsubject: News for {{ ward }}\nfrom: p@example.org\n---\nHi\n", encoding="utf-8"
    )
    compiled = check_message("s", settings, include_contacts=False).compiled
    from bulletin.errors import InputError

    with pytest.raises(InputError, match=r"c.csv:7: a field used in the subject contains a line"):
        compiled.render(contact(line=7, ward="Penge\r\nBcc: x@example.com"))


def test_fallback_for_an_empty_or_missing_name(example):
    for person in (contact(first_name=""), contact()):
        rendered = example.compiled.render(person)
        assert "Dear Co-ordinator," in rendered.text
        assert ">Dear Co-ordinator,</p>" in rendered.html


def test_empty_value_without_fallback_renders_empty(settings):
    compiled = compiled_message(settings, "Ward: {{ ward }}.\n")
    rendered = compiled.render(contact())
    assert "Ward: .\n" in rendered.text


def test_two_contacts_differ_only_in_their_fields(example):
    ann = contact("ann@example.org", first_name="Ann")
    bob = contact("robert@example.net", first_name="Robert")
    a = example.compiled.render(ann, "https://example.org/u?t=AAA")
    b = example.compiled.render(bob, "https://example.org/u?t=BBB")
    swap = {"ann@example.org": "robert@example.net", "Ann": "Robert", "AAA": "BBB"}
    for left, right in ((a.html, b.html), (a.text, b.text)):
        for old, new in swap.items():
            left = left.replace(old, new)
        assert left == right
    assert a.subject == b.subject


# --- compiled once ------------------------------------------------------------------------------


def test_one_compiled_message_renders_a_thousand_contacts_without_recompiling(
    settings, monkeypatch
):
    message = check_message("eu-referendum", settings, include_contacts=False).message
    compiled, problems = compile_email(message, settings.workdir)
    assert problems == []

    def forbidden(*args, **kwargs):
        raise AssertionError("per-recipient rendering must not re-run Markdown, Jinja or CSS")

    import css_inline
    import jinja2
    import markdown
    import nh3

    monkeypatch.setattr(markdown, "markdown", forbidden)
    monkeypatch.setattr(nh3, "clean", forbidden)
    monkeypatch.setattr(jinja2.Environment, "get_template", forbidden)
    monkeypatch.setattr(jinja2.Template, "render", forbidden)
    monkeypatch.setattr(css_inline, "CSSInliner", forbidden)
    monkeypatch.setattr(css_inline, "inline", forbidden)

    seen = set()
    for n in range(1000):
        rendered = compiled.render(
            contact(f"person{n}@example.org", first_name=f"Person{n}"), f"https://x.example/{n}"
        )
        assert f"Dear Person{n}," in rendered.text
        assert f">Dear Person{n},</p>" in rendered.html
        seen.add(rendered.html)
    assert len(seen) == 1000


def test_compile_reports_problems_but_still_compiles(settings):
    path = settings.workdir / "messages" / "t.md"
    path.write_text("---\nsubject: Hi\nfrom: p@example.org\n---\n{{ 7*7 }}\n", encoding="utf-8")
    message = check_message("t", settings, include_contacts=False).message
    compiled, problems = compile_email(message, settings.workdir)
    assert compiled is not None
    assert [(p.line, p.text.split(";")[0]) for p in problems] == [
        (5, "'{{ 7*7 }}' is not a placeholder")
    ]


def test_user_templates_override_the_packaged_ones(settings):
    (settings.workdir / "templates" / "email.txt").write_text(
        "CUSTOM {{ subject }}\n{{ body }}", encoding="utf-8"
    )
    compiled = compiled_message(settings, "Hello {{ first_name }}\n")
    assert compiled.render(contact(first_name="Ann")).text == "CUSTOM Test\nHello Ann\n"


def test_a_missing_user_template_falls_back_to_the_packaged_one(settings):
    (settings.workdir / "templates" / "email.html").unlink()
    compiled = compiled_message(settings, "Hello\n")
    assert "<html" in compiled.render(contact()).html


def test_templates_folder_is_optional(tmp_path):
    from bulletin.message import load_message

    (tmp_path / "m.md").write_text("---\nsubject: Hi\nfrom: p@example.org\n---\nHello\n")
    message, _ = load_message(Path(tmp_path / "m.md"), tmp_path)
    compiled, problems = compile_email(message, tmp_path)
    assert problems == []
    assert "Hello" in compiled.render(None).text


def test_every_line_of_the_example_survives_into_the_html_and_the_text(example, margaret):
    """Paragraph by paragraph (each line of the example is one), in the email and its text."""
    body = example.message.body
    lines = [re.sub(r"^(?:- |> ?)", "", line).strip() for line in body.splitlines()]
    lines = [line for line in lines if line and "{{" not in line]
    assert len(lines) > 15
    html_text = " ".join(text_of(content_cell(parse_html(margaret.html))).split())
    plain = " ".join(margaret.text.split())
    for line in lines:
        assert " ".join(line.split()) in html_text, line
        assert " ".join(line.split()) in plain, line
