"""The send path's fast paths give exactly what the plain code they replace gives.

Each reference below is the code as it was before the fast path (release 2): the regular
expressions of url_allowed, the slot-by-slot Slots.values, the fill-based render, the check of
every link of every contact. The fast versions are compared with them on hostile inputs.
"""

from __future__ import annotations

import html
import random
import re
import textwrap

import pytest

from bulletin.check import check_message
from bulletin.contacts import Contact
from bulletin.markup import RULE_WIDTH, URL_SCHEMES
from bulletin.render import (
    FEEDBACK,
    SUBJECT_RULE,
    UNSUBSCRIBE,
    URL_OF,
    CompiledEmail,
    Slots,
    fill,
    pattern,
    split,
    url_allowed,
)

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_URL_CONTROL = re.compile(r"[\x00-\x20\x7f]+")


def reference_url_allowed(value: str) -> bool:
    scheme = _SCHEME.match(_URL_CONTROL.sub("", value))
    return not scheme or scheme.group(1).lower() in URL_SCHEMES


def reference_values(slots: Slots, contact, unsubscribe_url: str = "", feedback_url: str = ""):
    get = contact.fields.get if contact is not None else {}.get
    out: list[str] = []
    for key, fallback in slots.keys:
        if key == UNSUBSCRIBE:
            out.append(unsubscribe_url)
        elif key == FEEDBACK:
            out.append(feedback_url)
        elif key.startswith(URL_OF):
            url = fill(slots.links[int(key[len(URL_OF) :])], out)
            out.append(url if reference_url_allowed(url) else "")
        else:
            out.append(get(key) or fallback)
    return out


def reference_render(compiled: CompiledEmail, contact, unsubscribe_url="", feedback_url=""):
    values = reference_values(compiled.slots, contact, unsubscribe_url, feedback_url)
    rule = compiled.slots.index_of(SUBJECT_RULE)
    if rule is not None:
        values[rule] = "=" * min(len(fill(compiled.subject, values)), RULE_WIDTH)
    escaped = [html.escape(v) for v in values]
    return fill(compiled.subject, values), fill(compiled.html, escaped), fill(compiled.text, values)


def reference_unsafe_links(slots: Slots, contact) -> list[str]:
    values = reference_values(slots, contact)
    return [u for u in (fill(p, values) for p in slots.links) if not reference_url_allowed(u)]


# --- url_allowed -------------------------------------------------------------------------------

ALPHABET = [*"httpsHTTPSmailtoMAILTOel:/.+-_ja vx%é{}", "\t", "\n", "\x00", "\x1f", "\x7f"]


def hostile_urls(count: int = 20_000, seed: int = 5):
    rng = random.Random(seed)
    starts = [f"{s}:" for s in URL_SCHEMES] + [s.upper() + ":" for s in URL_SCHEMES]
    starts += ["java\tscript:", "\x00https:", " https:", "https\t:", "ht\ntps:", "javascript:"]
    for _ in range(count):
        head = rng.choice(starts + [""] * 4)
        yield head + "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))


@pytest.mark.parametrize(
    "url",
    [
        "https:",
        "https://example.org/\x00javascript:alert(1)",
        "http:\tjavascript:x",
        "mailto:x@example.org\njavascript:x",
        "tel:\x7f123",
        "https\x00:x",
        "\thttps:",
        "HTTPS://example.org",
        "httpsjavascript:x",
        "https",
        "",
        "javascript:alert(1)",
        "data:text/html,x",
    ],
)
def test_url_allowed_agrees_with_the_regular_expressions(url):
    assert url_allowed(url) is reference_url_allowed(url)


def test_url_allowed_agrees_on_twenty_thousand_hostile_urls():
    for url in hostile_urls():
        assert url_allowed(url) is reference_url_allowed(url), repr(url)


# --- str.format patterns -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        (),
        ("plain",),
        (0,),
        ("{0}", 1, "}{", 0, "{{}}", 2, "{"),
        ("a", 2, 2, "b", 0),
    ],
)
def test_a_pattern_formats_to_what_fill_joins(parts):
    values = ["{1}", "}{x}", "{{"]
    assert pattern(parts).format(*values) == fill(parts, values)


# --- Slots.values and unsafe_links ---------------------------------------------------------------


def person(**fields: str) -> Contact:
    email = fields.setdefault("email", "ann@example.org")
    return Contact(email=email, fields=fields, file="c.csv", line=2)


HOSTILE_VALUES = [
    "",
    "Ann",
    "javascript:alert(1)",
    " JavaScript:alert(1)",
    "java\tscript:x",
    "https://example.org/x?a=1&b=2",
    "HTTPS://example.org",
    "{0}",
    "}{",
    "script:x",
    "tel:1",
    'x" onmouseover="y',
    "\x00",
]


def made_slots() -> Slots:
    """Slots of every kind, and links of every shape, in the order compile_email makes them."""
    slots = Slots()
    website, base, path = (slots.token_for(k) for k in ("website", "base", "path"))
    first = slots.token_for("first_name", "Co-ordinator")
    unsubscribe, rule, feedback = (
        slots.token_for(k) for k in (UNSUBSCRIBE, SUBJECT_RULE, FEEDBACK)
    )
    at_fields = slots.token_for("@unsubscribe") + slots.token_for("@url:0")  # CSV headers
    page = (
        f'<a href="{website}">a</a><a href="java{website}">b</a>'
        f"<a href='{base}{path}'>c</a><img src={unsubscribe}>"
        f'<a href="{feedback}&amp;a=useful">d</a><a href="&#9;{website}">e</a>'
        f'<a href="https://example.org/{first}?q={{x}}">f</a><a href="{rule}{website}">g</a>'
        f'<a href="java{unsubscribe}script:alert(1)">h</a><a href="{at_fields}">i</a>'
        f'<a href="{feedback}{website}">j</a><a href="https://example.org/">k</a>'
    )
    slots.guard_urls(page)
    return slots


def test_values_and_unsafe_links_agree_with_the_slot_by_slot_code():
    slots = made_slots()
    rng = random.Random(9)
    urls = ["", "https://bulletin.example.org/unsubscribe?t=1.2.x", "javascript:", "{0}"]
    keys = ["website", "base", "path", "first_name", "@unsubscribe", "@url:0", "@subject_rule"]
    for _ in range(3000):
        fields = {k: rng.choice(HOSTILE_VALUES) for k in keys if rng.random() < 0.7}
        contact = person(**fields)
        unsubscribe, feedback = rng.choice(urls), rng.choice(urls)
        assert slots.values(contact, unsubscribe, feedback) == reference_values(
            slots, contact, unsubscribe, feedback
        )
        assert slots.unsafe_links(contact) == reference_unsafe_links(slots, contact)
    assert slots.values(None, "u", "f") == reference_values(slots, None, "u", "f")
    assert slots.unsafe_links(None) == reference_unsafe_links(slots, None)


def test_a_link_made_only_of_our_urls_is_still_checked_when_its_literals_are_unsafe():
    slots = Slots()
    unsubscribe = slots.token_for(UNSUBSCRIBE)
    slots.guard_urls(f'<a href="java{unsubscribe}script:alert(1)">x</a>')
    assert slots.unsafe_links(person()) == ["javascript:alert(1)"]
    assert slots.values(person(), "", "")[-1] == ""
    assert slots.values(person(), "https://bulletin.example.org/u", "")[-1] == ""  # javahttps:


def test_links_without_a_contact_field_are_judged_once_for_everyone():
    slots = Slots()
    unsubscribe, feedback = slots.token_for(UNSUBSCRIBE), slots.token_for(FEEDBACK)
    slots.guard_urls(
        f'<a href="https://example.org/">a</a><a href="{unsubscribe}">b</a>'
        f'<a href="java{unsubscribe}script:x">c</a><a href="{feedback}&amp;a=1">d</a>'
    )
    for fields in ({}, {"website": "javascript:y"}, {"first_name": "Ann"}):
        contact = person(**fields)
        assert slots.unsafe_links(contact) == reference_unsafe_links(slots, contact)
        assert slots.unsafe_links(contact) == ["javascript:x"]
    found = slots.unsafe_links(person())
    found.append("changed by a caller")
    assert slots.unsafe_links(person()) == ["javascript:x"]  # each caller gets its own list


def test_slots_added_after_a_first_use_are_seen():
    slots = Slots()
    slots.guard_urls(f'<a href="{slots.token_for("website")}">x</a>')
    assert slots.values(person(website="javascript:x")) == ["javascript:x", ""]
    assert slots.unsafe_links(person(website="javascript:x")) == ["javascript:x"]
    slots.guard_urls(f'<a href="{slots.token_for("scheme")}">x</a>')
    contact = person(website="https://example.org", scheme="vbscript:x")
    assert slots.values(contact) == reference_values(slots, contact)
    assert slots.unsafe_links(contact) == ["vbscript:x"]


def test_split_then_pattern_round_trips_a_rendered_layout():
    slots = made_slots()
    text = "".join(f"{{x}} \ue000{i}\ue001 }}" for i in range(len(slots.keys)))
    values = [f"v{i}{{}}" for i in range(len(slots.keys))]
    assert pattern(split(text)).format(*values) == fill(split(text), values)


# --- whole messages ------------------------------------------------------------------------------


def compiled_message(settings, body: str) -> CompiledEmail:
    path = settings.workdir / "messages" / "t.md"
    path.write_text(
        "---\nsubject: Hello {{ first_name }} {x}\nfrom: Police <p@example.org>\n---\n"
        + textwrap.dedent(body),
        encoding="utf-8",
    )
    checked = check_message("t", settings, include_contacts=False)
    assert checked.compiled is not None, checked.problems
    return checked.compiled


def test_render_agrees_with_the_fill_based_render(settings):
    compiled = compiled_message(
        settings,
        """
        Dear {{ first_name or "friend" }}, {braces} {{ '{{' }}

        [Your scheme]({{ website }}) ![map]({{ website }}) [page](https://example.org/{{ ward }})

        See {{ website }} in {{ ward }}.
        """,
    )
    rng = random.Random(3)
    for _ in range(300):
        fields = {
            k: rng.choice(HOSTILE_VALUES).replace("\x00", "")
            for k in ("first_name", "website", "ward")
            if rng.random() < 0.8
        }
        contact = person(**fields)
        url = rng.choice(["", "https://bulletin.example.org/unsubscribe?t=1.2.x"])
        link = rng.choice(["", "https://bulletin.example.org/feedback?t=1.2.x"])
        rendered = compiled.render(contact, url, link)
        assert (rendered.subject, rendered.html, rendered.text) == reference_render(
            compiled, contact, url, link
        )
        assert compiled.unsafe_links(contact) == reference_unsafe_links(compiled.slots, contact)


def test_the_example_renders_as_before(settings):
    checked = check_message("eu-referendum", settings)
    for contact in checked.audience[:50]:
        rendered = checked.compiled.render(contact, "https://bulletin.example.org/u?t=1", "f")
        assert (rendered.subject, rendered.html, rendered.text) == reference_render(
            checked.compiled, contact, "https://bulletin.example.org/u?t=1", "f"
        )
