"""The SendGrid transport: the real `sendgrid` client against the loopback v3 stand-in.

The stand-in validates every request like the real API and can misbehave on cue
(tests/servers.py): rate limits, 5xx, a refused key, a 400, a slow or dropped answer. Tests
that read the tracking database run on SQLite and PostgreSQL (the `backend` fixture).
"""

from __future__ import annotations

import html
import json
import os
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from servers import (
    SendGridStub,
    drop_after_read,
    drop_before_read,
    expand_request,
    garbage,
    rate_limited,
    slow,
    status,
)
from test_send import SAMPLE, deliveries, people, states, street_message

from bulletin.check import check_message
from bulletin.config import load_settings
from bulletin.send import execute, plan_send
from bulletin.transports import Waiter
from bulletin.unsubscribe import verify_token

NAME = 'Zoë "Zed" <O\'Neil> & Co'  # every character HTML would have to escape


def _key_value(personalization: dict, email: str) -> None:
    """Substitutions: the text key holds the raw value, the html key the escaped one."""
    subs = personalization["substitutions"]
    assert all(isinstance(v, str) for v in subs.values())
    for key, value in subs.items():
        if key.startswith("~h"):
            text = subs.get("~t" + key[2:])
            if text is not None:
                assert value == html.escape(text)


def test_a_large_send_is_split_into_requests_of_at_most_1000_personalizations(
    workdir, cli, sendgrid_env, backend, monkeypatch
):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "1")  # requests in order: accepted[1] is the second
    rows = people(2500)
    rows[1500]["first_name"] = NAME
    name = street_message(workdir, rows)
    result = cli("send", name, "--yes")
    assert "Send #1: 2500 accepted, 0 failed, 0 unknown, 0 still pending." in result.stdout

    assert sendgrid_env.requests == 3
    assert [len(r["emails"]) for r in sendgrid_env.accepted] == [1000, 1000, 500]
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == 2500 and set(delivered.values()) == {1}

    rows_by_email = deliveries(backend)
    for request in sendgrid_env.accepted:
        body = request["body"]
        assert body["categories"] == ["street-safety"]
        assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
        for personalization, email in zip(body["personalizations"], request["emails"], strict=True):
            assert len(personalization["to"]) == 1 and "cc" not in personalization
            row = rows_by_email[email]
            # custom_args map webhook events back to the delivery; SendGrid wants strings.
            assert personalization["custom_args"] == {
                "bulletin_send": "1",
                "bulletin_delivery": str(row["id"]),
            }
            headers = personalization["headers"]
            assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            link = headers["List-Unsubscribe"]
            assert "\n" not in link and "\r" not in link
            assert link.startswith("<https://bulletin.example.org/unsubscribe?t=")
            token = parse_qs(urlsplit(link.strip("<>")).query)["t"][0]
            assert verify_token(os.environ["BULLETIN_SECRET"], token, email)
            _key_value(personalization, email)
            # X-Message-Id of the request is stored with each of its deliveries.
            assert row["message_id"] == request["message_id"]
            assert row["state"] == "accepted"

    special = sendgrid_env.accepted[1]["body"]["personalizations"][500]
    assert special["to"] == [{"email": "person01501@example.org", "name": f"{NAME} Example"}]
    subs = special["substitutions"]
    assert NAME in subs.values()  # text parts and the subject get it as written
    assert html.escape(NAME) in subs.values()  # the HTML part gets it escaped


def test_request_uses_the_api_key_and_the_message_front_matter(workdir, cli, sendgrid_env):
    cli("send", "eu-referendum", "--yes")
    body = sendgrid_env.accepted[0]["body"]
    assert body["from"] == {
        "email": "bromley.neighbourhoods@example.org",
        "name": "Metropolitan Police Service, Bromley Borough",  # from the settings
    }
    assert body["reply_to"]["email"] == "bromley.snt@example.org"
    assert body["categories"] == ["key-messages"]
    assert body["headers"] == {"X-Bulletin-Reference": "BR-2016-07-01"}
    assert len(body["personalizations"]) == SAMPLE


def test_the_text_part_is_the_same_unwrapped_text_as_smtp_sends(workdir, cli, sendgrid_env):
    """SendGrid's content type cannot carry format=flowed (no ';' allowed), so bulletin never
    hard-wraps paragraphs: the text is the same for every transport (issue 15, item 5)."""
    cli("send", "eu-referendum", "--yes")
    (plain,) = [c for c in sendgrid_env.accepted[0]["body"]["content"] if c["type"] == "text/plain"]
    opening = next(line for line in plain["value"].splitlines() if line.startswith("I’m writing"))
    assert opening.endswith("circulate them to your contacts.")


def test_oversized_personal_fields_fail_that_recipient_only(workdir, cli, sendgrid_env, backend):
    rows = people(3)
    rows[1]["first_name"] = "x" * 6000  # used in subject and body: over 10,000 bytes
    name = street_message(workdir, rows)
    result = cli("send", name, "--yes", expect=3)
    assert "person00002@example.org: personal fields too large for SendGrid" in result.stderr
    assert set(sendgrid_env.delivered_emails()) == {
        "person00001@example.org",
        "person00003@example.org",
    }
    assert states(backend) == {"accepted": 2, "failed": 1}


# --- retried failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        rate_limited(reset_in=0, retry_after=0),
        status(500),
        status(502),
        status(503),
        status(504),
        garbage(500),
    ],
    ids=["429", "500", "502", "503", "504", "garbage-500"],
)
def test_rate_limits_and_server_errors_are_retried_then_sent_once(
    workdir, cli, sendgrid_env, fault
):
    sendgrid_env.script(fault, fault)
    result = cli("send", "eu-referendum", "--yes")
    assert f"{SAMPLE} accepted" in result.stdout
    assert sendgrid_env.requests == 3
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == SAMPLE and set(delivered.values()) == {1}


class RecordingWaiter(Waiter):
    """Records each back-off instead of sleeping, at a fixed Unix time: no test waits."""

    NOW = 1_700_000_000.0

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return True

    def now(self) -> float:
        return self.NOW


def _send_recording_waits(workdir) -> list[float]:
    settings = load_settings(workdir)
    waiter = RecordingWaiter()
    plan = plan_send(check_message("eu-referendum", settings), settings, waiter=waiter)
    execute(plan, settings, waiter=waiter)
    return waiter.waits


def test_a_429_retry_after_is_honoured(workdir, sendgrid_env, monkeypatch):
    monkeypatch.setenv("BULLETIN_RETRY_MAX_WAIT", "10")
    # Jittered back-off alone would wait at most 1 s before the first retry.
    sendgrid_env.script(rate_limited(reset_in=0, retry_after=2))
    assert _send_recording_waits(workdir) == [2.0]
    assert sendgrid_env.requests == 2 and len(sendgrid_env.accepted) == 1


def test_a_429_x_ratelimit_reset_is_honoured_without_retry_after(workdir, monkeypatch):
    monkeypatch.setenv("BULLETIN_RETRY_MAX_WAIT", "10")
    # SendGrid's 429 carries X-RateLimit-Reset (a Unix time), no Retry-After.
    key = "SG.test-key-fixed-clock"
    with SendGridStub(api_key=key, clock=lambda: RecordingWaiter.NOW) as stub:
        monkeypatch.setenv("SENDGRID_API_KEY", key)
        monkeypatch.setenv("BULLETIN_SENDGRID_URL", stub.url)
        monkeypatch.setenv("BULLETIN_SECRET", "s" * 40)
        monkeypatch.setenv("BULLETIN_PUBLIC_URL", "https://bulletin.example.org")
        stub.script(rate_limited(reset_in=3, retry_after=None))
        assert _send_recording_waits(workdir) == [pytest.approx(3.1)]
        assert stub.requests == 2 and len(stub.accepted) == 1


def test_persistent_503_stops_the_send_and_a_rerun_completes(workdir, cli, sendgrid_env, backend):
    sendgrid_env.script(*[status(503)] * 6)  # BULLETIN_RETRIES=5: one try and five retries
    result = cli("send", "eu-referendum", "--yes", expect=4)
    assert "SendGrid answered 503 6 times" in result.stderr
    assert "the same command resumes" in result.stderr
    assert sendgrid_env.requests == 6 and not sendgrid_env.accepted
    db = backend
    assert states(db) == {"pending": SAMPLE}

    result = cli("send", "eu-referendum", "--yes")
    assert f"{SAMPLE} accepted" in result.stdout
    assert states(db) == {"accepted": SAMPLE}
    assert set(sendgrid_env.delivered_emails().values()) == {1}


# --- refused outright --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [401, 403])
def test_a_refused_api_key_stops_at_once_and_never_prints_the_key(
    workdir, cli, sendgrid_env, code, backend
):
    if code == 401:
        sendgrid_env.set_api_key("SG.some-other-key")
    else:
        sendgrid_env.script(status(403))
    result = cli("send", "eu-referendum", "--yes", expect=4)
    assert "SENDGRID_API_KEY" in result.stderr
    assert f"({code}:" in result.stderr
    key = os.environ["SENDGRID_API_KEY"]  # conftest's canary, set by sendgrid_env
    assert key.startswith("SG.") and "canary" in key
    assert key not in result.stdout + result.stderr
    assert key[3:] not in result.stdout + result.stderr
    assert sendgrid_env.requests == 1  # not retried
    assert states(backend) == {"pending": SAMPLE}  # nobody marked failed


def test_a_400_fails_that_batch_with_sendgrids_text_and_sends_the_others(
    workdir, cli, sendgrid_env, backend, monkeypatch
):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "1")  # the scripted answers meet requests in order
    name = street_message(workdir, people(2100))
    error = {"errors": [{"field": "personalizations.0.to", "message": "Invalid recipient"}]}
    sendgrid_env.script(slow(0), status(400, error))
    result = cli("send", name, "--yes", expect=3)
    assert "failed: person01001@example.org: SendGrid 400: personalizations.0.to: " in (
        result.stderr
    )
    assert "Send #1: 1100 accepted, 1000 failed" in result.stdout
    assert "bulletin status 1" in result.stderr
    rows = deliveries(backend)
    failed = {email for email, row in rows.items() if row["state"] == "failed"}
    assert failed == {f"person{n:05d}@example.org" for n in range(1001, 2001)}
    assert rows["person01001@example.org"]["error"].endswith("Invalid recipient")
    assert set(sendgrid_env.delivered_emails()) == set(rows) - failed

    # Failed recipients are final: a re-run sends nobody again.
    cli("send", name, "--yes")
    assert sendgrid_env.requests == 3


# --- no answer: the batch may have gone --------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [slow(3), drop_after_read(), drop_after_read(reset=True)],
    ids=["timeout", "dropped", "reset"],
)
def test_no_answer_makes_the_batch_unknown_and_it_is_resent_only_on_request(
    workdir, cli, sendgrid_env, monkeypatch, fault, backend
):
    monkeypatch.setenv("BULLETIN_TIMEOUT", "0.5")
    sendgrid_env.script(fault)
    result = cli("send", "eu-referendum", "--yes", expect=3)
    assert "no answer from the transport; not re-sent automatically" in result.stderr
    assert sendgrid_env.requests == 1  # not retried: the stand-in did accept it
    assert len(sendgrid_env.accepted) == 1
    db = backend
    assert states(db) == {"unknown": SAMPLE}

    result = cli("send", "eu-referendum", "--yes", expect=3)  # still unknown: exit 3 (issue 11)
    assert f"no pending recipients; {SAMPLE} unknown (use --resend-unknown" in result.stdout
    assert sendgrid_env.requests == 1

    cli("send", "eu-referendum", "--yes", "--resend-unknown")
    assert sendgrid_env.requests == 2
    assert states(db) == {"accepted": SAMPLE}


def test_a_202_with_a_garbled_body_is_still_accepted(workdir, cli, sendgrid_env, backend):
    sendgrid_env.script(garbage(202))
    cli("send", "eu-referendum", "--yes")
    rows = deliveries(backend)
    assert {r["state"] for r in rows.values()} == {"accepted"}
    assert {r["message_id"] for r in rows.values()} == {None}  # no X-Message-Id came back


def test_a_connection_closed_before_reading_is_never_counted_as_sent(
    workdir, cli, sendgrid_env, backend
):
    sendgrid_env.script(drop_before_read())
    cli("send", "eu-referendum", "--yes", expect=3)
    counts = states(backend)
    assert counts.get("accepted", 0) == 0 and not sendgrid_env.accepted


def test_sendgrid_unreachable_stops_with_a_clear_line_and_marks_nobody_sent(
    workdir, cli, sendgrid_env, backend
):
    sendgrid_env.stop()
    result = cli("send", "eu-referendum", "--yes", expect=4)
    assert f"cannot reach SendGrid at {sendgrid_env.url}" in result.stderr
    assert "BULLETIN_SENDGRID_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert states(backend) == {"pending": SAMPLE}


# --- substitution keys no contact can name (issue 19) -----------------------------------------

KEY_SHAPE = re.compile(r"~[th]\d+_[A-Za-z0-9_-]{11}~")
ORDERS = [(order, passes) for order in ("given", "reversed", "at-once") for passes in (1, 3)]
NAMED = """\
---
subject: 'Hello {{ first_name }}'
from: bromley.neighbourhoods@example.org
reference: BR-TEST-KEYS
contacts: [lists/people.csv]
public: false
---
Dear {{ first_name }} {{ last_name }} of {{ ward }},

Literal text like ~t0~ and ~h1~ is the letter's own.
"""


def _arrives_literally(sendgrid, rows: list[dict]) -> None:
    """However SendGrid orders or repeats its substitutions, each value arrives as written."""
    by_email = {r["email"]: r for r in rows}
    for request in sendgrid.accepted:
        keys = {k for p in request["body"]["personalizations"] for k in p["substitutions"]}
        for order, passes in ORDERS:
            for email in expand_request(request["body"], order, passes):
                row = by_email[email["email"]]
                first, last = row["first_name"], row["last_name"]
                assert email["subject"] == f"Hello {first}", (order, passes)
                assert f"Dear {first} {last} of {row['ward']}," in email["text"], (order, passes)
                assert f"{html.escape(first)} {html.escape(last)}" in email["html"]
                assert "Literal text like ~t0~ and ~h1~" in email["text"]
                for part in ("subject", "text", "html"):
                    assert not any(k in email[part] for k in keys), (order, passes, part)


def test_a_value_that_names_another_key_arrives_literally(workdir, cli, sendgrid_env):
    rows = people(4)
    rows[0]["first_name"] = "~h3~"  # the old keys: the HTML key of another field
    rows[1]["first_name"] = "~t0~"
    rows[2]["last_name"] = "~h0~ ~t1~ ~h2~"
    rows[3]["first_name"] = '<b>"bold"</b> & ~h1~'
    name = street_message(workdir, rows, NAMED)
    cli("send", name, "--yes")
    body = sendgrid_env.accepted[0]["body"]
    keys = set(body["personalizations"][0]["substitutions"])
    assert keys and all(KEY_SHAPE.fullmatch(k) for k in keys)
    _arrives_literally(sendgrid_env, rows)


def test_even_the_exact_keys_of_an_earlier_request_arrive_literally(workdir, cli, sendgrid_env):
    rows = people(2)
    name = street_message(workdir, rows, NAMED)
    cli("send", name, "--yes")
    earlier = sendgrid_env.accepted[0]["body"]["personalizations"][0]["substitutions"]
    html_keys = sorted(k for k in earlier if k.startswith("~h"))
    text_keys = sorted(k for k in earlier if k.startswith("~t"))
    # The best guess a contact can make: the keys of the same message's last request.
    rows[0]["first_name"], rows[0]["last_name"] = html_keys[-1], text_keys[0]
    rows[1]["first_name"], rows[1]["last_name"] = " ".join(text_keys), " ".join(html_keys)
    (workdir / "messages" / "again.md").write_text(NAMED, encoding="utf-8")
    street_message(workdir, rows, NAMED)
    sendgrid_env.reset()
    cli("send", "again", "--yes")
    later = sendgrid_env.accepted[0]["body"]["personalizations"][0]["substitutions"]
    assert not set(later) & set(earlier)  # a fresh token for every request
    _arrives_literally(sendgrid_env, rows)


def test_the_token_is_never_one_the_letters_own_text_contains(monkeypatch):
    from bulletin.transports import sendgrid

    drawn = iter(["a" * 11, "b" * 11])
    monkeypatch.setattr(sendgrid.secrets, "token_urlsafe", lambda n: next(drawn))
    keys = sendgrid.Keys.draw([0], [0, 1], literals="quoting aaaaaaaaaaa here")
    assert keys.text == {0: "~t0_bbbbbbbbbbb~"}
    assert keys.html == {0: "~h0_bbbbbbbbbbb~", 1: "~h1_bbbbbbbbbbb~"}
    assert keys.key_bytes == 3 * len("~t0_bbbbbbbbbbb~")


# --- tracking settings and links that stay ours (issue 19) ------------------------------------

LINKS = """\
---
subject: Links
from: bromley.neighbourhoods@example.org
reference: BR-TEST-LINKS
contacts: [lists/people.csv]
---
Read [our page](https://bulletin.example.org/m/BR-TEST-LINKS) or
[the Met](https://www.met.police.uk/) or call [101](tel:101).
"""
ANCHOR = re.compile(r"<a\b[^>]*>")


def test_tracking_is_set_on_every_request_clicks_off_by_default(workdir, cli, sendgrid_env):
    name = street_message(workdir, people(1500))
    cli("send", name, "--yes")
    assert len(sendgrid_env.accepted) == 2
    for request in sendgrid_env.accepted:  # the stand-in validated the shape
        assert request["body"]["tracking_settings"] == {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": True},
            "subscription_tracking": {"enable": False},
            "ganalytics": {"enable": False},
        }
    result = cli("status", "1")
    assert "Opens tracked: yes · Clicks tracked: no" in result.stdout
    tracking = json.loads(cli("status", "1", "--json").stdout)["sends"][0]["tracking"]
    assert tracking == {"opens": True, "clicks": False}
    cli("report", "1", "-o", "report.html")
    assert "Opens tracked: yes · Clicks tracked: no" in (workdir / "report.html").read_text()


def test_click_tracking_on_never_reaches_our_own_links(workdir, cli, sendgrid_env, monkeypatch):
    monkeypatch.setenv("BULLETIN_CLICK_TRACKING", "on")
    monkeypatch.setenv("BULLETIN_OPEN_TRACKING", "off")
    name = street_message(workdir, people(2), LINKS)
    cli("send", name, "--yes")
    body = sendgrid_env.accepted[0]["body"]
    assert body["tracking_settings"]["click_tracking"] == {"enable": True, "enable_text": False}
    assert body["tracking_settings"]["open_tracking"] == {"enable": False}
    (email,) = expand_request(body)[:1]
    anchors = ANCHOR.findall(email["html"])
    ours = [a for a in anchors if "bulletin.example.org/" in a]
    # the body's link to the public page, the share line's page and notice (issue 21), the
    # unsubscribe link and 3 feedback links (issue 18)
    assert len(ours) == 7
    assert any("/unsubscribe?t=" in a for a in ours)
    assert sum("/feedback?t=" in a for a in ours) == 3
    # SendGrid honours the attribute only before the href (its click-tracking guide).
    assert all(a.startswith('<a clicktracking="off" ') for a in ours), ours
    others = [a for a in anchors if a not in ours]
    assert others and not any("clicktracking" in a for a in others)  # tel:, met.police.uk
    assert "Opens tracked: no · Clicks tracked: yes" in cli("status", "1").stdout


def test_a_tracking_setting_that_is_not_on_or_off_is_one_clear_line(workdir, cli, sendgrid_env):
    cli("send", "eu-referendum", "--yes", env={"BULLETIN_CLICK_TRACKING": "sometimes"}, expect=1)
    result = cli("check", "eu-referendum", env={"BULLETIN_CLICK_TRACKING": "sometimes"}, expect=1)
    assert "BULLETIN_CLICK_TRACKING='sometimes' is not on or off" in result.stderr
    assert not sendgrid_env.requests


# --- limits known before sending (issue 19) ---------------------------------------------------


def test_check_names_a_contact_over_the_substitution_limit(workdir, cli, sendgrid_env):
    rows = people(3)
    rows[1]["first_name"] = "x" * 6000
    name = street_message(workdir, rows)
    result = cli("check", name)
    assert result.stderr.splitlines() == [
        "warning: lists/people.csv:3: personal fields too large for SendGrid "
        f"({_substitution_bytes(workdir, rows[1]):,} bytes of substitutions, limit 10,000); "
        "it will not be sent"
    ]
    assert result.stdout.strip().endswith("OK — 3 email recipient(s), 1 warning(s)")
    # Other transports have no such limit.
    assert "warning" not in cli("check", name, env={"BULLETIN_TRANSPORT": "outbox"}).stderr

    result = cli("send", name, "--yes", expect=3)
    assert "warning: lists/people.csv:3: personal fields too large" in result.stderr
    assert "Refused:   1 over the transport's limits" in result.stderr
    assert "failed: person00002@example.org: personal fields too large" in result.stderr
    assert len(sendgrid_env.delivered_emails()) == 2


def test_another_transport_chosen_at_send_time_has_no_sendgrid_warnings(workdir, cli, sendgrid_env):
    rows = people(2)
    rows[1]["first_name"] = "x" * 6000
    name = street_message(workdir, rows)
    result = cli("send", name, "--yes", "--transport", "outbox")
    assert "warning" not in result.stderr and "Refused" not in result.stderr
    assert "Send #1: 2 written to the outbox" in result.stdout


def _substitution_bytes(workdir, row) -> int:
    """What the send itself measured for this row (the one rule in transports/sendgrid.py)."""
    from bulletin.check import check_message
    from bulletin.config import load_settings
    from bulletin.transports.sendgrid import Outgoing, request_template

    settings = load_settings(workdir)
    checked = check_message("street", settings)
    (contact,) = [c for c in checked.recipients if c.email == row["email"]]
    template = request_template(checked.compiled, settings)
    url = "https://bulletin.example.org/unsubscribe?t=999999999999.999999999999999." + "x" * 22
    feedback = "https://bulletin.example.org/feedback?t=999999999999.999999999999999." + "x" * 22
    item = Outgoing(
        0,
        contact,
        url,
        {"bulletin_send": "9" * 12, "bulletin_delivery": "9" * 15},
        feedback_url=feedback,
    )
    return template.personalization(template.keys(), item)[2]


def test_too_many_personal_values_stop_check_and_send(workdir, cli, sendgrid_env):
    body = " ".join(f"{{{{ field{i} }}}}" for i in range(60))
    rows = [dict(people(1)[0], **{f"field{i}": str(i) for i in range(60)})]
    name = street_message(workdir, rows, NAMED.replace("Literal", body + "\n\nLiteral"))
    result = cli("check", name, expect=1)
    assert "SendGrid allows 100" in result.stderr
    assert "messages/street.md: uses 1" in result.stderr
    cli("send", name, "--yes", expect=1)
    assert not sendgrid_env.requests


def test_requests_are_grouped_under_30_mb():
    from bulletin.transports.sendgrid import MAX_REQUEST_BYTES, request_groups

    assert request_groups(100, [10, 20, 30]) == ([[0, 1, 2]], [])
    groups, alone = request_groups(1_000_000, [10_000_000, 10_000_000, 20_000_000, 40_000_000])
    assert groups == [[0, 1], [2]] and alone == [3]
    for group in groups:
        sizes = [10_000_000, 10_000_000, 20_000_000]
        assert 1_000_000 + sum(sizes[i] + 1 for i in group) <= MAX_REQUEST_BYTES


@pytest.mark.slow
def test_a_batch_too_big_for_one_request_is_sent_in_two(workdir, cli, sendgrid_env):
    rows = people(1000)
    for row in rows:  # 500 emoji: 2,000 bytes of UTF-8 but 6,000 of escaped JSON, 5 times
        row["first_name"] = "\U0001f46e" * 500
    name = street_message(workdir, rows)
    result = cli("check", name)
    assert "warning" not in result.stderr
    cli("send", name, "--yes")
    assert len(sendgrid_env.accepted) == 2
    assert sum(len(r["emails"]) for r in sendgrid_env.accepted) == 1000
