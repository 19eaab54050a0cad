"""SendGrid v3 Mail Send through the official `sendgrid` library.

One request carries up to 1,000 recipients, each in its own personalization (no one ever sees
another's address), with per-recipient substitutions, custom_args that map webhook events
back to the delivery, and its own List-Unsubscribe headers.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from html import escape, unescape
from json.encoder import encode_basestring_ascii

from bulletin.config import Settings
from bulletin.contacts import Contact
from bulletin.errors import Problem
from bulletin.fields import has_line_break
from bulletin.render import (
    FEEDBACK,
    SUBJECT_RULE,
    UNSUBSCRIBE,
    URL_OF,
    CompiledEmail,
    Part,
    split,
    token,
)
from bulletin.tracking import State
from bulletin.transports import Outcome, Outgoing, Unsent, Waiter, backoff

# SendGrid's documented limits of v3 Mail Send (its Limitations page and the personalization
# reference): 1,000 personalizations; per personalization at most 100 substitutions of at most
# 10,000 bytes together, custom_args under 10,000 bytes; a request under 30 MB.
MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTIONS = 100
MAX_SUBSTITUTION_BYTES = 10_000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_REQUEST_BYTES = 30_000_000  # "less than 30MB": the decimal, stricter reading
RETRY_STATUSES = {429, 500, 502, 503, 504}
# custom_args as large as a send can make them (send.py: the send's and the delivery's ids).
LARGEST_CUSTOM_ARGS = {"bulletin_send": "9" * 12, "bulletin_delivery": "9" * 15}
_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile("\\bhref\\s*=\\s*[\"']?(?:\ue000(\\d+)\ue001|([^\"'\\s>]*))", re.IGNORECASE)


# --- substitution keys (issue 19) ----------------------------------------------------------
# SendGrid does not document the order in which it applies substitutions, nor whether it
# makes more than one pass. So every key carries a random token drawn for each request: a
# contact's value can never spell another key (it would have to guess the token before the
# request was built), whatever the order and however many passes.


@dataclass(frozen=True)
class Keys:
    """One request's substitution keys: `~t3_<token>~` (text, subject), `~h3_<token>~` (HTML)."""

    token: str
    text: dict[int, str]  # slot → key
    html: dict[int, str]
    key_bytes: int  # every key's length, counted in each personalization's 10,000 bytes

    @classmethod
    def draw(cls, text_slots: Sequence[int], html_slots: Sequence[int], literals: str) -> Keys:
        """Keys with a fresh token that the message's own text does not contain."""
        while True:
            tag = secrets.token_urlsafe(8)  # 64 random bits in 11 characters
            if tag not in literals:  # never let the letter's own text be taken for a key
                break
        text = {i: f"~t{i}_{tag}~" for i in text_slots}
        html = {i: f"~h{i}_{tag}~" for i in html_slots}
        size = sum(len(k) for k in text.values()) + sum(len(k) for k in html.values())
        return cls(tag, text, html, size)

    def __len__(self) -> int:
        return len(self.text) + len(self.html)

    def fill(self, parts: Sequence[Part], kind: str) -> str:
        names = self.html if kind == "h" else self.text
        return "".join(p if isinstance(p, str) else names[p] for p in parts)


# --- limits: one rule for `check` and for the transport (issue 19) --------------------------


def substitution_error(size: int) -> str | None:
    """Why SendGrid would refuse substitutions of `size` bytes, or None."""
    if size > MAX_SUBSTITUTION_BYTES:
        return (
            f"personal fields too large for SendGrid ({size:,} bytes of substitutions, "
            f"limit {MAX_SUBSTITUTION_BYTES:,})"
        )
    return None


def custom_args_error(custom_args: dict[str, str]) -> str | None:
    """Why SendGrid would refuse these custom_args (measured as compact JSON), or None."""
    size = len(json.dumps(custom_args, separators=(",", ":"), ensure_ascii=False).encode())
    if size >= MAX_CUSTOM_ARGS_BYTES:
        return (
            f"custom_args too large for SendGrid ({size:,} bytes, limit {MAX_CUSTOM_ARGS_BYTES:,})"
        )
    return None


def keys_error(keys: Keys) -> str | None:
    if len(keys) > MAX_SUBSTITUTIONS:
        return (
            f"uses {len(keys)} personal values per recipient; SendGrid allows "
            f"{MAX_SUBSTITUTIONS}: use fewer different placeholders"
        )
    return None


def request_groups(
    base: int, sizes: Sequence[int], limit: int | None = None
) -> tuple[list[list[int]], list[int]]:
    """Personalizations (by index, of JSON sizes `sizes`) grouped into requests under `limit`
    (default MAX_REQUEST_BYTES).

    `base` is the size of the request without them. Returns the groups and the indexes that
    would not fit in a request even alone.
    """
    limit = MAX_REQUEST_BYTES if limit is None else limit
    groups: list[list[int]] = []
    alone: list[int] = []
    current: list[int] = []
    total = base
    for index, size in enumerate(sizes):
        if base + size + 1 > limit:
            alone.append(index)
            continue
        if current and total + size + 1 > limit:
            groups.append(current)
            current, total = [], base
        current.append(index)
        total += size + 1  # and a comma
    if current:
        groups.append(current)
    return groups, alone


def request_size(body: dict) -> int:
    """Bytes of the request as the client sends it (json.dumps, ASCII-escaped)."""
    return len(json.dumps(body))


def limit_problems(
    compiled: CompiledEmail, contacts: Sequence[Contact], settings: Settings
) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) of sending this message through SendGrid, known before sending.

    Problems stop every copy (too many personal values, a request over 30 MB even for one
    recipient); warnings name, as FILE:LINE, the contacts SendGrid would refuse — the send
    isolates them, exactly as here, and sends to everyone else.
    """
    from bulletin.unsubscribe import make_token, unsubscribe_url

    message = compiled.message
    template = request_template(compiled, settings)
    keys = template.keys()
    problems: list[Problem] = []
    for error in (keys_error(keys), custom_args_error(LARGEST_CUSTOM_ARGS)):
        if error:
            problems.append(Problem(message.shown, None, error))
    base = request_size(template.body(keys)) + len(', "personalizations": []')
    warnings: list[Problem] = []
    public = settings.public_url or "https://bulletin.example.org"
    longest_url = unsubscribe_url(public, f"{'9' * 12}.{'9' * 15}.{'x' * 22}")
    # A personalization within the substitution limit is under ~70 kB of JSON.
    every_one = base + 12 * MAX_SUBSTITUTION_BYTES > MAX_REQUEST_BYTES
    bound = _bound(compiled, keys, len(longest_url))
    for contact in contacts:
        if not every_one and bound(contact) <= MAX_SUBSTITUTION_BYTES:
            continue  # surely fine: a `check` of 100,000 contacts stays quick
        # The longest unsubscribe link a send makes for this contact (ids of 12 and 15 digits).
        url = unsubscribe_url(public, make_token("x", 10**12 - 1, 10**15 - 1, contact.email))
        link = _longest_feedback_url(compiled, public, contact)
        item = Outgoing(0, contact, url, LARGEST_CUSTOM_ARGS, feedback_url=link)
        personalization, error, _ = template.personalization(keys, item)
        if error is None and request_groups(base, [len(personalization)])[1]:
            size = len(personalization)
            error = f"too large for one SendGrid request ({base + size:,} bytes, limit 30 MB)"
        if error:
            warnings.append(Problem(contact.file, contact.line, f"{error}; it will not be sent"))
    return problems, warnings


def _longest_feedback_url(compiled: CompiledEmail, public: str, contact: Contact) -> str:
    """The longest "Was this useful?" link a send makes for this contact (issue 18)."""
    from bulletin.feedback import feedback_url, make_token

    if compiled.message.feedback is None:
        return ""
    return feedback_url(public, make_token("x", 10**12 - 1, 10**15 - 1, contact.email))


def _bound(compiled: CompiledEmail, keys: Keys, url_bytes: int):
    """A cheap upper bound of a contact's substitution bytes, without rendering anything.

    A value costs at most 4 bytes a character in UTF-8, 6 times that once HTML-escaped.
    """
    slots = compiled.slots.keys
    weights: dict[str, int] = {}
    constant = keys.key_bytes
    for used, weight in ((keys.text, 1), (keys.html, 6)):
        for index in used:
            key, fallback = slots[index]
            if key.startswith(URL_OF):  # a link's safe value is at most its slot's value
                key, fallback = slots[int(key[len(URL_OF) :])]
            if key in (UNSUBSCRIBE, FEEDBACK):  # the feedback link is no longer (issue 18)
                constant += weight * url_bytes
            elif key == SUBJECT_RULE:
                constant += weight * 76
            else:
                weights[key] = weights.get(key, 0) + 4 * weight
                constant += 4 * weight * len(fallback)
    pairs = tuple(weights.items())

    def bound(contact: Contact) -> int:
        get = contact.fields.get
        return constant + sum(weight * len(get(key) or "") for key, weight in pairs)

    return bound


def mark_our_links(html: Sequence[Part], compiled: CompiledEmail, public_url: str) -> tuple:
    """Our own links (unsubscribe, anything under BULLETIN_PUBLIC_URL) get clicktracking="off".

    SendGrid leaves a link alone only with the attribute inside the anchor before the href
    (its click-tracking guide), so the unsubscribe link always goes straight to us, even when
    BULLETIN_CLICK_TRACKING is on and whatever the account's settings.
    """
    keys, links = compiled.slots.keys, compiled.slots.links
    prefix = public_url.rstrip("/") + "/" if public_url else None
    ours = {i for i, (key, _) in enumerate(keys) if key in (UNSUBSCRIBE, FEEDBACK)}

    def our_link(parts: Sequence[Part]) -> bool:  # a URL_OF link: made of our slot, or our URL
        starts_ours = bool(prefix and parts and isinstance(parts[0], str))
        return any(p in ours for p in parts if isinstance(p, int)) or (
            starts_ours and parts[0].startswith(prefix)
        )

    ours |= {
        i
        for i, (key, _) in enumerate(keys)
        if key.startswith(URL_OF) and our_link(links[int(key[len(URL_OF) :])])
    }

    def mark(anchor: re.Match) -> str:
        tag = anchor.group(0)
        href = _HREF.search(tag)
        if href is None or "clicktracking" in tag.lower():
            return tag
        slot, literal = href.group(1), unescape(href.group(2) or "")
        if (slot is not None and int(slot) in ours) or (prefix and literal.startswith(prefix)):
            return '<a clicktracking="off"' + tag[2:]
        return tag

    text = "".join(p if isinstance(p, str) else token(p) for p in html)
    return split(_ANCHOR.sub(mark, text))


@dataclass
class RequestTemplate:
    """What every request of one message shares; keys are filled in per request."""

    compiled: CompiledEmail
    base: dict  # the body without subject, content and personalizations
    html: tuple
    text_slots: list[int]
    html_slots: list[int]
    literals: str

    def keys(self) -> Keys:
        return Keys.draw(self.text_slots, self.html_slots, self.literals)

    def body(self, keys: Keys) -> dict:
        compiled = self.compiled
        return dict(
            self.base,
            subject=keys.fill(compiled.subject, "t"),
            content=[
                {"type": "text/plain", "value": keys.fill(compiled.text, "t")},
                {"type": "text/html", "value": keys.fill(self.html, "h")},
            ],
        )

    def personalization(
        self, keys: Keys, item: Outgoing, subject: str = ""
    ) -> tuple[str | None, str | None, int]:
        """One recipient's personalization as JSON text, or why SendGrid would refuse it; and
        its substitutions' size."""
        return next(self.personalizations(keys, [item], subject))[1:]

    def personalizations(
        self, keys: Keys, batch: Sequence[Outgoing], subject: str = ""
    ) -> Iterator[tuple[Outgoing, str | None, str | None, int]]:
        """(item, personalization, error, substitution bytes) for each recipient of `batch`.

        The personalization is the JSON text `json.dumps` writes for the dict SendGrid's
        reference describes, byte for byte (tests/test_sendgrid_requests.py builds both).
        100,000 times a send, that dict and its json.dumps cost twice as much as this: a
        recipient's strings (address, name, substitution values, custom_args, unsubscribe
        header, subject) are joined by backquotes, encoded in one call and cut apart again,
        then set into a frame of the JSON around them, made once per shape of personalization.
        A recipient whose strings hold a backquote takes the long way: one encoding a string.
        """
        values_of = self.compiled.values
        text_slots, html_slots = self.text_slots, self.html_slots
        count, key_bytes = len(text_slots) + len(html_slots), keys.key_bytes
        names = [keys.text[i] for i in text_slots] + [keys.html[i] for i in html_slots]
        request_subject = subject or keys.fill(self.compiled.subject, "t")
        frames: dict[tuple, tuple[list[str], int]] = {}
        for item in batch:
            contact = item.contact
            values = values_of(contact, item.unsubscribe_url, item.feedback_url)
            text = [values[i] for i in text_slots]
            html = [escape(_SEPARATOR.join([values[i] for i in html_slots]))] if html_slots else []
            substitutions = _SEPARATOR.join(text + html)  # `count` values, apart
            size = key_bytes + (
                len(substitutions) if substitutions.isascii() else len(substitutions.encode())
            )
            size -= max(count - 1, 0)  # the separators
            if size > MAX_SUBSTITUTION_BYTES:
                yield item, None, substitution_error(size), size
                continue
            email, name = contact.email, contact.name
            if has_line_break(email + name):
                yield item, None, "line break in the name or address", size
                continue
            custom_args = item.custom_args
            shape = (
                bool(name),
                tuple(custom_args),
                bool(item.unsubscribe_url),
                item.subject_prefix != "",
            )
            frame = frames.get(shape)
            if frame is None:
                frame = frames[shape] = _frame(names, *shape)
            arguments = list(map(str, custom_args.values()))
            if 6 * sum(map(len, arguments)) + frame[1] >= MAX_CUSTOM_ARGS_BYTES:  # else small
                error = custom_args_error(dict(zip(custom_args, arguments, strict=True)))
                if error:
                    yield item, None, error, size
                    continue
            head = [email, name] if name else [email]
            tail = arguments
            if item.unsubscribe_url:
                tail.append(f"<{item.unsubscribe_url}>")
            if item.subject_prefix:
                tail.append(item.subject_prefix + request_subject)
            pieces, _ = frame
            joined = _SEPARATOR.join([*head, substitutions, *tail] if count else head + tail)
            encoded = _encode(joined).split(_SEPARATOR)  # JSON writes a backquote as it is
            if len(encoded) * 2 + 1 == len(pieces):
                pieces[1::2] = encoded
            else:  # the long way: a string holds a backquote
                html = [escape(values[i]) for i in html_slots]
                encoded = [_encode(string)[1:-1] for string in head + text + html + tail]
                encoded[0] = '"' + encoded[0]
                encoded[-1] += '"'
                pieces[1::2] = encoded
            yield item, "".join(pieces), None, size

    def requests(
        self, keys: Keys, batch: Sequence[Outgoing]
    ) -> tuple[list[Outcome], list[tuple[list[Outgoing], str]]]:
        """The outcomes of the recipients SendGrid would refuse, and the requests for the others
        (nearly always one): the recipients each carries and its JSON text, byte for byte
        what `json.dumps(dict(body, personalizations=[…]))` writes."""
        body = self.body(keys)
        outcomes: list[Outcome] = []
        personalizations: list[str] = []
        included: list[Outgoing] = []
        for item, personalization, error, _ in self.personalizations(keys, batch, body["subject"]):
            if error:
                outcomes.append(Outcome(item.delivery_id, State.FAILED, error=error))
            else:
                personalizations.append(personalization)
                included.append(item)
        if not personalizations:
            return outcomes, []
        head = json.dumps(body)
        base = len(head) + len(', "personalizations": []')
        head = head[:-1] + ', "personalizations": ['
        sizes = list(map(len, personalizations))
        if base + sum(sizes) + len(sizes) <= MAX_REQUEST_BYTES:  # nearly always
            return outcomes, [(included, head + ", ".join(personalizations) + "]}")]
        groups, alone = request_groups(base, sizes)
        for index in alone:
            outcomes.append(
                Outcome(
                    included[index].delivery_id,
                    State.FAILED,
                    error=f"too large for one SendGrid request ({base + sizes[index]:,} "
                    "bytes, limit 30 MB)",
                )
            )
        requests = [
            (
                [included[i] for i in group],
                head + ", ".join([personalizations[i] for i in group]) + "]}",
            )
            for group in groups
        ]
        return outcomes, requests


def _frame(
    names: Sequence[str],
    has_name: bool,
    custom_keys: tuple[str, ...],
    has_unsubscribe: bool,
    has_subject: bool,
) -> tuple[list[str], int]:
    """The JSON text around a personalization's strings, as json.dumps writes the dict
    {"to": [{"email", "name"?}], "substitutions", "custom_args", "headers"?, "subject"?}
    (default separators, ASCII): literal text at even indexes, each string's place at the
    odd ones, where the strings encoded together and cut apart at the separators go. Such
    a piece brings its own quotes only at the ends; the literals between take the rest.

    And the constant part of a bound of the custom_args' compact UTF-8 JSON size (a
    character is at most 6 bytes there: \\u001f).
    """
    layout: list[str | None] = ['{"to": [{"email": ', None]
    if has_name:
        layout += [', "name": ', None]
    layout.append('}], "substitutions": {')
    for n, name in enumerate(names):  # keys are [~A-Za-z0-9_-]: nothing to escape
        layout += [f'{", " if n else ""}"{name}": ', None]
    layout.append('}, "custom_args": {')
    for n, key in enumerate(custom_keys):
        layout += [f"{', ' if n else ''}{_encode(key)}: ", None]
    layout.append("}")
    if has_unsubscribe:
        layout += [
            ', "headers": {"List-Unsubscribe": ',
            None,
            ', "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}',
        ]
    if has_subject:
        layout += [', "subject": ', None]
    layout.append("}")
    pieces: list[str] = []
    literal = ""
    for part in layout:
        if part is None:
            pieces += [f'"{literal}"' if pieces else literal, ""]
            literal = ""
        else:
            literal += part
    pieces.append(literal)
    return pieces, 2 + 6 * (len(custom_keys) + sum(map(len, custom_keys)))


_SEPARATOR = "`"  # printable, left alone by html.escape and JSON; rare in addresses and names
_encode = encode_basestring_ascii  # how json.dumps writes a str (its C encoder)


def tracking_settings(settings: Settings) -> dict:
    """Set on every request, so the account's own settings never decide (issue 19).

    Plain-text click tracking stays off even when click tracking is on: a text part cannot
    mark the unsubscribe link as ours, and SendGrid would rewrite it.
    """
    return {
        "click_tracking": {"enable": settings.click_tracking, "enable_text": False},
        "open_tracking": {"enable": settings.open_tracking},
        "subscription_tracking": {"enable": False},
        "ganalytics": {"enable": False},
    }


def request_template(compiled: CompiledEmail, settings: Settings) -> RequestTemplate:
    message = compiled.message
    literals = "".join(
        p for p in compiled.html + compiled.text + compiled.subject if isinstance(p, str)
    )
    base: dict = {
        "from": {
            "email": message.sender.email,
            **({"name": message.sender.name} if message.sender.name else {}),
        },
        "headers": {"X-Bulletin-Reference": message.reference},
        "tracking_settings": tracking_settings(settings),
    }
    if message.reply_to:
        base["reply_to"] = {
            "email": message.reply_to.email,
            **({"name": message.reply_to.name} if message.reply_to.name else {}),
        }
    if message.category:
        base["categories"] = [message.category]
    html = mark_our_links(compiled.html, compiled, settings.public_url)
    html_slots = {p for p in html if isinstance(p, int)}
    text_slots = {p for p in compiled.text + compiled.subject if isinstance(p, int)}
    return RequestTemplate(compiled, base, html, sorted(text_slots), sorted(html_slots), literals)


class SendGridTransport:
    name = "sendgrid"
    batch_size = MAX_PERSONALIZATIONS

    def __init__(self, settings: Settings, waiter: Waiter) -> None:
        self.settings = settings
        self.waiter = waiter
        self.url = settings.sendgrid_url
        self.tracking = {"opens": settings.open_tracking, "clicks": settings.click_tracking}
        self._client = None
        self._templates: dict[int, RequestTemplate] = {}
        # Requests awaiting their answers at once (send.py runs each on its own thread); the
        # sendgrid client opens a fresh connection per request, so they share nothing but this.
        self.in_flight = settings.in_flight
        # Held by a request backing off after a 429 or 5xx: every other request waits too.
        self._backing_off = threading.Lock()

    def describe(self) -> str:
        return f"SendGrid ({self.url})"

    def open(self) -> None:
        from sendgrid import SendGridAPIClient

        self._client = SendGridAPIClient(api_key=self.settings.sendgrid_api_key, host=self.url)
        self._client.client.timeout = self.settings.timeout

    def close(self) -> None:
        self._client = None

    def _template(self, compiled: CompiledEmail) -> RequestTemplate:
        cached = self._templates.get(id(compiled))
        if cached is None:
            cached = self._templates[id(compiled)] = request_template(compiled, self.settings)
        return cached

    def send(self, compiled: CompiledEmail, batch: list[Outgoing]) -> list[Outcome]:
        return self.prepare(compiled, batch)()

    def prepare(
        self, compiled: CompiledEmail, batch: list[Outgoing]
    ) -> Callable[[], list[Outcome]]:
        """Build the batch's requests now; the function returned posts them (send.py builds
        one batch at a time, whichever request thread it is on: see its `_Builder`)."""
        template = self._template(compiled)
        keys = template.keys()  # a fresh token for every request
        error = keys_error(keys)
        if error:
            raise Unsent(f"{compiled.message.shown}: {error}")
        outcomes, requests = template.requests(keys, batch)
        return partial(self._post_all, outcomes, requests)

    def _post_all(
        self, outcomes: list[Outcome], requests: list[tuple[list[Outgoing], str]]
    ) -> list[Outcome]:
        for items, request in requests:
            try:
                state, message_id, error = self._post(request)
            except Unsent as stop:
                stop.outcomes = outcomes  # recipients finished before the transport stopped
                raise
            outcomes += [Outcome(item.delivery_id, state, message_id, error) for item in items]
        return outcomes

    def _post(self, body: str) -> tuple[State, str | None, str | None]:
        """Send one request (its JSON text), retrying only when SendGrid certainly did not
        accept it."""
        from python_http_client import exceptions

        attempt = 0
        while True:
            with self._backing_off:  # another request was told to slow down: so is this one
                pass
            if self.waiter.interrupted:
                return State.PENDING, None, None  # Ctrl-C: certainly not sent
            try:
                response = self._send(body)
            except exceptions.HTTPError as error:
                status = error.status_code
                detail = _error_text(error)
                if status in (401, 403):
                    raise Unsent(
                        f"SendGrid refused the API key ({status}: {detail}); check "
                        "SENDGRID_API_KEY in .env and its Mail Send permission"
                    ) from None
                if status in RETRY_STATUSES and attempt < self.settings.retries:
                    if not self._back_off(self._delay(error, attempt)):
                        return State.PENDING, None, None  # Ctrl-C: certainly not sent
                    attempt += 1
                    continue
                if status in RETRY_STATUSES:
                    raise Unsent(
                        f"SendGrid answered {status} {attempt + 1} times ({detail}); "
                        "try again later: the same command resumes"
                    ) from None
                return State.FAILED, None, f"SendGrid {status}: {detail}"
            except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
                if _certainly_not_sent(error):
                    if attempt < self.settings.retries:
                        if not self.waiter.wait(backoff(attempt, self.settings.retry_max_wait)):
                            return State.PENDING, None, None
                        attempt += 1
                        continue
                    raise Unsent(
                        f"cannot reach SendGrid at {self.url} "
                        f"({_reason(error)}); check BULLETIN_SENDGRID_URL and the "
                        "network, then run the same command again"
                    ) from None
                return (
                    State.UNKNOWN,
                    None,
                    f"no answer from SendGrid ({_reason(error)}); it may have been sent",
                )
            if response.status_code not in (200, 202):
                return State.UNKNOWN, None, f"unexpected answer {response.status_code}"
            headers = response.headers
            message_id = headers.get("X-Message-Id") if headers is not None else None
            return State.ACCEPTED, message_id, None

    def _send(self, body: str):
        """POST one request's JSON text to /v3/mail/send through the `sendgrid` client's
        python_http_client: its URL, API key and headers, its errors and its Response.

        Its `post` would json.dumps the text again (it takes a str as it is only under
        another Content-Type, and SendGrid wants exactly application/json), then format its
        DEBUG line with the whole body, whatever the log level: 8 ms a request of 1,000. So
        this is the urllib request `post` builds, with our text, sent by the client's own
        `_make_request`.
        """
        from python_http_client.client import Response

        client = self._client.client.mail.send
        request = urllib.request.Request(
            client._build_url(None),
            data=body.encode(),
            headers={**client.request_headers, "Content-Type": "application/json"},
            method="POST",
        )
        return Response(client._make_request(urllib.request.build_opener(), request))

    def _back_off(self, seconds: float) -> bool:
        """Wait `seconds` holding back every request of this transport (a 429 is about the
        account, not one request); less the time spent waiting for another's back-off.
        False if interrupted."""
        if not self._backing_off.acquire(blocking=False):
            asked = time.monotonic()
            self._backing_off.acquire()
            seconds -= time.monotonic() - asked
        try:
            return self.waiter.wait(seconds) if seconds > 0 else not self.waiter.interrupted
        finally:
            self._backing_off.release()

    def _delay(self, error, attempt: int) -> float:
        """Honour Retry-After or X-RateLimit-Reset (a Unix time), else back off with jitter."""
        headers = getattr(error, "headers", None) or {}
        cap = self.settings.retry_max_wait
        retry_after = headers.get("Retry-After")
        if retry_after:
            try:
                return min(cap, float(retry_after))
            except ValueError:
                pass
        reset = headers.get("X-RateLimit-Reset")
        if reset:
            try:
                return min(cap, max(0.0, float(reset) - self.waiter.now()) + 0.1)
            except ValueError:
                pass
        return backoff(attempt, cap)


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error) or type(error).__name__


def _certainly_not_sent(error: BaseException) -> bool:
    """Refused connections and name look-ups fail before any byte of the request is sent."""
    reason = getattr(error, "reason", error)
    return isinstance(reason, ConnectionRefusedError | socket.gaierror)


def _error_text(error) -> str:
    body = error.body.decode("utf-8", "replace") if isinstance(error.body, bytes) else error.body
    try:
        errors = json.loads(body).get("errors", [])
        return (
            "; ".join(
                (f"{e.get('field')}: " if e.get("field") else "") + str(e.get("message"))
                for e in errors
            )
            or body[:200]
        )
    except (ValueError, AttributeError, TypeError):
        return (body or "")[:200]
