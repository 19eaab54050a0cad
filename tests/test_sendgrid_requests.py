"""SendGrid requests written as JSON text are the requests the dict code wrote, byte for byte.

`RequestTemplate.personalizations` writes each recipient's personalization from pre-encoded
fragments and `requests` joins them into the request's text (issue 13, performance). The
reference below is the code it replaced: a dict per recipient, `json.dumps` of the whole
request, `_size_bound` to skip measuring. For a hostile corpus of contacts and several
messages and settings, both must give the same bytes (so the same parsed JSON), the same
substitution sizes and the same verdicts: the 10,000 substitution bytes, line breaks,
custom_args, and the 30 MB request (grouping, and a recipient too large even alone), in
`send` and in `check`. The last test sends through the real `sendgrid` client to the
stand-in, which parses what arrived.
"""

from __future__ import annotations

import json
from html import escape

import pytest
from servers import SendGridStub
from test_send import write_contacts

from bulletin.check import check_message
from bulletin.config import load_settings
from bulletin.contacts import Contact
from bulletin.fields import has_line_break
from bulletin.ledger.store import Claimed
from bulletin.send import _batch
from bulletin.tracking import State
from bulletin.transports import Outgoing, Waiter
from bulletin.transports import sendgrid as sg

SECRET = "test-secret-for-request-equivalence-0123456789"
PUBLIC = "https://bulletin.example.org"

# --- the reference: the dict code the JSON text replaced ----------------------------------------


def reference_substitutions(keys: sg.Keys, values: list[str]) -> dict[str, str]:
    substitutions = {key: values[i] for i, key in keys.text.items()}
    for i, key in keys.html.items():
        substitutions[key] = escape(values[i])
    return substitutions


def reference_substitution_bytes(keys: sg.Keys, substitutions: dict[str, str]) -> int:
    joined = "".join(substitutions.values())
    return keys.key_bytes + (len(joined) if joined.isascii() else len(joined.encode()))


def reference_personalization(
    template: sg.RequestTemplate, keys: sg.Keys, item: Outgoing, subject: str = ""
) -> tuple[dict | None, str | None, int]:
    substitutions = reference_substitutions(
        keys, template.compiled.values(item.contact, item.unsubscribe_url, item.feedback_url)
    )
    size = reference_substitution_bytes(keys, substitutions)
    error = sg.substitution_error(size)
    if error:
        return None, error, size
    email, name = item.contact.email, item.contact.name
    if has_line_break(email + name):
        return None, "line break in the name or address", size
    custom_args = {k: str(v) for k, v in item.custom_args.items()}
    if sum(map(len, custom_args)) + sum(map(len, custom_args.values())) > 1000:
        error = sg.custom_args_error(custom_args)
        if error:
            return None, error, size
    to = {"email": email}
    if name:
        to["name"] = name
    personalization = {"to": [to], "substitutions": substitutions, "custom_args": custom_args}
    if item.unsubscribe_url:
        personalization["headers"] = {
            "List-Unsubscribe": f"<{item.unsubscribe_url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    if item.subject_prefix:
        personalization["subject"] = item.subject_prefix + (
            subject or keys.fill(template.compiled.subject, "t")
        )
    return personalization, None, size


def reference_size_bound(personalization: dict, substitution_bytes: int) -> int:
    to = personalization["to"][0]
    strings = len(to["email"]) + len(to.get("name", "")) + len(personalization.get("subject", ""))
    headers = personalization.get("headers") or {}
    strings += sum(map(len, headers.values())) + sum(map(len, personalization["custom_args"]))
    strings += sum(map(len, personalization["custom_args"].values()))
    return 6 * substitution_bytes + 12 * strings + 512


def reference_requests(template, keys, batch):
    """The old `SendGridTransport.send` up to its posts: (outcomes, [(delivery ids, body)])."""
    body = template.body(keys)
    outcomes, personalizations, included, bound = [], [], [], 0
    for item in batch:
        personalization, error, size = reference_personalization(
            template, keys, item, body["subject"]
        )
        if error:
            outcomes.append((item.delivery_id, State.FAILED, error))
        else:
            personalizations.append(personalization)
            included.append(item)
            bound += reference_size_bound(personalization, size)
    if not personalizations:
        return outcomes, []
    base = len(json.dumps(body)) + len(', "personalizations": []')
    if base + bound <= sg.MAX_REQUEST_BYTES:
        groups = [list(range(len(personalizations)))]
    else:
        sizes = [len(json.dumps(p)) for p in personalizations]
        groups, alone = sg.request_groups(base, sizes)
        for index in alone:
            error = (
                f"too large for one SendGrid request ({base + sizes[index]:,} bytes, limit 30 MB)"
            )
            outcomes.append((included[index].delivery_id, State.FAILED, error))
    requests = [
        (
            [included[i].delivery_id for i in group],
            dict(body, personalizations=[personalizations[i] for i in group]),
        )
        for group in groups
    ]
    return outcomes, requests


def new_requests(template, keys, batch):
    outcomes, requests = template.requests(keys, batch)
    return (
        [(o.delivery_id, o.state, o.error) for o in outcomes],
        [([item.delivery_id for item in items], text) for items, text in requests],
    )


def assert_same_requests(template, keys, batch) -> int:
    """Old and new agree on every outcome and every request's bytes; returns the requests."""
    old_outcomes, old_requests = reference_requests(template, keys, batch)
    new_outcomes, new_requests_ = new_requests(template, keys, batch)
    assert new_outcomes == old_outcomes
    assert [ids for ids, _ in new_requests_] == [ids for ids, _ in old_requests]
    for (_, text), (_, body) in zip(new_requests_, old_requests, strict=True):
        assert json.loads(text) == body
        assert text == json.dumps(body)  # byte for byte, as the client wrote it
        assert text.isascii()
    for item in batch:  # and each recipient's substitution size, whatever the verdict
        (_, personalization, error, size) = next(template.personalizations(keys, [item]))
        old, old_error, old_size = reference_personalization(template, keys, item)
        assert (error, size) == (old_error, old_size)
        assert personalization == (None if old is None else json.dumps(old))
    return len(new_requests_)


# --- the corpus ------------------------------------------------------------------------------

HOSTILE_VALUES = [
    "",
    "Ann",
    'Zoë "Zed" <O\'Neil> & Co',
    "<script>alert('x')</script>",
    "&amp; &lt; &#39; &quot;",
    "日本語のテキスト",
    "emoji 😀🎉 and a lone \u2028 separator \u2029",
    "tab\there, bell\x07, escape \x1b, DEL \x7f",
    "a NUL \x00 inside",
    "\x00",
    "back\\slash \\u0000 \\\\ \\n \\",
    "\\",
    '"',
    "back`quotes` ``",
    "`",
    "%s %d {0} {} {{ first_name }}",
    "~t0_AAAAAAAAAAA~ ~h1_x~",
    "javascript:alert(1)",
    "https://www.example.org/a?b=1&c=2",
    "  spaced  ",
    "x" * 3000,  # long: several of them pass 10,000 substitution bytes
    "é" * 1700,
]


def hostile_contacts() -> list[Contact]:
    contacts = []
    for n, value in enumerate(HOSTILE_VALUES):
        for m, other in enumerate((HOSTILE_VALUES[-n - 1], "", "Smith")):
            fields = {
                "email": f"person{n}.{m}@example.org",
                "first_name": value,
                "last_name": other,
                "ward": other or value,
                "website": value if m else "https://www.example.org/scheme",
            }
            contacts.append(Contact(fields["email"], fields, "lists/people.csv", 2 + n))
    # A line break in the name; a name only in last_name; no name at all.
    names = [("Ann\nBcc: x", ""), ("", "Okafor"), ("", ""), ("A\r", "B")]
    for n, (first, last) in enumerate(names):
        fields = {"email": f"named{n}@example.net", "first_name": first, "last_name": last}
        contacts.append(Contact(fields["email"], fields, "lists/people.csv", 100 + n))
    return contacts


MESSAGES = {
    # Subject with a placeholder and fallback: the subject rule differs per recipient.
    "street": """\
---
subject: 'Street safety update for {{ first_name or "neighbour" }}'
from: bromley.neighbourhoods@example.org
category: street-safety
reference: BR-TEST-1
contacts: [lists/people.csv]
---
Dear {{ first_name or "Neighbour" }} {{ last_name }},

Please report all hate crime to 999 in an emergency, or to 101. <b>&</b> "quotes".
""",
    # No feedback question; reply-to; links made of contact fields; our own page linked.
    "links": """\
---
subject: Your ward, {{ ward }} & "more"
from: Bromley Team <bromley.neighbourhoods@example.org>
reply_to: Desk <desk@example.org>
reference: BR-TEST-2
feedback: false
contacts: [lists/people.csv]
---
Hello {{ first_name or "there" }}. [Your scheme]({{ website }}) ![map]({{ website }})
[page](https://example.org/{{ ward }}) [ours](https://bulletin.example.org/m/BR-TEST-2)
[the Met](https://www.met.police.uk/) {{ website }}
""",
    # A plain subject, no placeholder in the body: only our own links are personal.
    "plain": """\
---
subject: A plain notice
from: bromley.neighbourhoods@example.org
reference: BR-TEST-3
feedback: Did this help?
contacts: [lists/people.csv]
---
Nothing personal here, but the links.
""",
}


def items_for(compiled, contacts: list[Contact], send_id: int = 123) -> list[Outgoing]:
    """What `send` gives the transport (send.py's _batch), plus the other callers' shapes."""
    rows = [Claimed(n + 1, c.email, c.email.lower()) for n, c in enumerate(contacts)]  # by_key
    by_key = {c.email.lower(): c for c in contacts}
    items, outcomes = _batch(compiled, send_id, rows, by_key, SECRET, PUBLIC)
    assert not outcomes
    extra = [
        Contact(f"extra{n}@example.com", {**c.fields, "email": f"extra{n}@example.com"}, c.file, 1)
        for n, c in enumerate(contacts[3:10])
    ]
    items += [
        # send --test: a subject prefix, another custom arg
        Outgoing(9001, extra[0], f"{PUBLIC}/unsubscribe?t=test", {"bulletin_test": "1"}, "[TEST] "),
        # approval: no unsubscribe link (no List-Unsubscribe headers), no feedback link
        Outgoing(9002, extra[1], "", {"bulletin_send": "approval", "bulletin_test": "approval"}),
        # custom_args that are not text, and ones too large for SendGrid
        Outgoing(9003, extra[2], "u", {"bulletin_send": 7, "bulletin_delivery": 9003}),
        Outgoing(9004, extra[3], "u", {"bulletin_note": "é" * 6000}),
        Outgoing(9005, extra[4], "u", {"bulletin_note": "x" * 990}),
        # 10,000 bytes of compact JSON: refused; 9,999: sent
        Outgoing(9006, extra[5], "u", {"bulletin_note": "é" * 4990}),
        Outgoing(9007, extra[6], "u", {"bulletin_note": "x" * 9979}),
    ]
    return items


def _template(workdir, name: str, **environ: str):
    write_contacts(workdir / "lists" / "people.csv", [{"email": "x@example.org"}])
    (workdir / "messages" / f"{name}.md").write_text(MESSAGES[name], encoding="utf-8")
    settings = load_settings(
        workdir,
        environ={"BULLETIN_SECRET": SECRET, "BULLETIN_PUBLIC_URL": PUBLIC, **environ},
    )
    checked = check_message(name, settings)
    assert checked.compiled is not None, checked.problems
    return checked, settings, sg.request_template(checked.compiled, settings)


@pytest.mark.parametrize("name", sorted(MESSAGES))
@pytest.mark.parametrize("clicks", ["false", "true"])
def test_every_request_is_byte_for_byte_what_the_dict_code_wrote(workdir, name, clicks):
    _, _, template = _template(workdir, name, BULLETIN_CLICK_TRACKING=clicks)
    items = items_for(template.compiled, hostile_contacts())
    for _ in range(3):  # fresh keys each time, as for each request
        keys = template.keys()
        assert assert_same_requests(template, keys, items) == 1
        assert assert_same_requests(template, keys, items[::-1]) == 1
        for item in items[:4] + items[-5:]:  # one recipient a request
            assert_same_requests(template, keys, [item])


def test_the_corpus_meets_every_verdict(workdir):
    """The hostile corpus is hostile: it is refused for each reason, and the long way (a
    backquote in a value) is taken as well as the fast one."""
    _, _, template = _template(workdir, "street")
    items = items_for(template.compiled, hostile_contacts())
    outcomes, _ = reference_requests(template, template.keys(), items)
    errors = {error.split(" (")[0] for _, _, error in outcomes}
    assert errors == {
        "personal fields too large for SendGrid",
        "line break in the name or address",
        "custom_args too large for SendGrid",
    }
    values = ["".join(template.compiled.values(i.contact, i.unsubscribe_url)) for i in items]
    assert any("`" in v for v in values) and not all("`" in v for v in values)
    assert any("\x00" in v for v in values) and any("\\" in v for v in values)


def test_the_30_mb_limit_groups_and_refuses_as_before(workdir, monkeypatch):
    """With smaller request limits, recipients are split over several requests and those too
    large even alone are refused, exactly where the dict code split and refused."""
    _, _, template = _template(workdir, "street")
    items = items_for(template.compiled, hostile_contacts())
    keys = template.keys()
    ((_, body),) = reference_requests(template, keys, items)[1]
    base = len(json.dumps(dict(body, personalizations=[])))
    sizes = sorted(len(json.dumps(p)) for p in body["personalizations"])
    middle = sizes[len(sizes) // 2]
    for limit in (base + sizes[-1], base + sizes[-1] + 1, base + 3 * middle, base + middle + 1):
        monkeypatch.setattr(sg, "MAX_REQUEST_BYTES", limit)
        assert assert_same_requests(template, keys, items) > 1
    outcomes, _ = new_requests(template, keys, items)
    assert any("too large for one SendGrid request" in (error or "") for *_, error in outcomes)


def reference_limit_warnings(compiled, contacts, settings) -> list[str]:
    """The old `limit_problems` warnings: the dict personalization, measured only when its
    bound passes 30 MB."""
    from bulletin.feedback import feedback_url
    from bulletin.feedback import make_token as feedback_token
    from bulletin.unsubscribe import make_token, unsubscribe_url

    template = sg.request_template(compiled, settings)
    keys = template.keys()
    base = len(json.dumps(template.body(keys))) + len(', "personalizations": []')
    public = settings.public_url
    warnings = []
    every_one = base + 12 * sg.MAX_SUBSTITUTION_BYTES > sg.MAX_REQUEST_BYTES
    bound = sg._bound(
        compiled, keys, len(unsubscribe_url(public, f"{'9' * 12}.{'9' * 15}.{'x' * 22}"))
    )
    for contact in contacts:
        if not every_one and bound(contact) <= sg.MAX_SUBSTITUTION_BYTES:
            continue
        url = unsubscribe_url(public, make_token("x", 10**12 - 1, 10**15 - 1, contact.email))
        link = ""
        if compiled.message.feedback is not None:
            link = feedback_url(public, feedback_token("x", 10**12 - 1, 10**15 - 1, contact.email))
        item = Outgoing(0, contact, url, sg.LARGEST_CUSTOM_ARGS, feedback_url=link)
        personalization, error, size = reference_personalization(template, keys, item)
        if error is None and base + reference_size_bound(personalization, size) > (
            sg.MAX_REQUEST_BYTES
        ):
            size = len(json.dumps(personalization))
            if sg.request_groups(base, [size])[1]:
                error = f"too large for one SendGrid request ({base + size:,} bytes, limit 30 MB)"
        if error:
            warnings.append(f"{contact.file}:{contact.line}: {error}; it will not be sent")
    return warnings


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_check_warns_about_the_same_contacts(workdir, name, monkeypatch):
    checked, settings, template = _template(workdir, name)
    contacts = hostile_contacts()
    base = len(json.dumps(template.body(template.keys()))) + len(', "personalizations": []')
    for limit in (sg.MAX_REQUEST_BYTES, base + 1500):  # then some are too large even alone
        monkeypatch.setattr(sg, "MAX_REQUEST_BYTES", limit)
        _, warnings = sg.limit_problems(checked.compiled, contacts, settings)
        # A key's length depends on its slot's number of digits, never on the token.
        expected = reference_limit_warnings(checked.compiled, contacts, settings)
        assert [f"{w.file}:{w.line}: {w.text}" for w in warnings] == expected
    assert any("too large for one SendGrid request" in warning for warning in expected)


def test_substitution_bytes_count_utf8_whether_ascii_or_not(workdir):
    """Every key and every value in UTF-8, the separators that join values in the fast way not
    counted (the rule moved here from test_render_fast_paths with Keys.substitutions)."""
    _, _, template = _template(workdir, "street")
    keys = template.keys()
    for item in items_for(template.compiled, hostile_contacts()):
        values = template.compiled.values(item.contact, item.unsubscribe_url, item.feedback_url)
        substitutions = reference_substitutions(keys, values)
        expected = keys.key_bytes + len("".join(substitutions.values()).encode())
        assert next(template.personalizations(keys, [item]))[3] == expected


def test_the_real_client_posts_the_same_json(workdir, monkeypatch):
    """Through the `sendgrid` client to the stand-in (which wants exactly application/json):
    what arrives parses to the dict code's request."""
    api_key = "SG.test-key-for-the-stand-in-0123456789"
    monkeypatch.setattr(sg.secrets, "token_urlsafe", lambda n: "Tok3n_-AbCd")
    with SendGridStub(api_key=api_key, keep_bodies=True) as stub:
        environ = {"SENDGRID_API_KEY": api_key, "BULLETIN_SENDGRID_URL": stub.url}
        _, settings, template = _template(workdir, "street", **environ)
        items = items_for(template.compiled, hostile_contacts())
        old_outcomes, old_requests = reference_requests(template, template.keys(), items)
        transport = sg.SendGridTransport(settings, Waiter())
        transport.open()
        outcomes = transport.send(template.compiled, items)
        transport.close()
    assert [r["body"] for r in stub.accepted] == [body for _, body in old_requests]
    failed = [(o.delivery_id, o.state, o.error) for o in outcomes if o.state == State.FAILED]
    assert failed == old_outcomes
    accepted = {o.delivery_id for o in outcomes if o.state == State.ACCEPTED}
    assert accepted == {i for ids, _ in old_requests for i in ids}
