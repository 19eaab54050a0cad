"""SendGrid v3 Mail Send through the official `sendgrid` library.

One request carries up to 1,000 recipients, each in its own personalization (no one ever sees
another's address), with per-recipient substitutions, custom_args that map webhook events
back to the delivery, and its own List-Unsubscribe headers.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
from html import escape

from bulletin.config import Settings
from bulletin.fields import has_line_break
from bulletin.render import CompiledEmail, Part
from bulletin.tracking import State
from bulletin.transports import Outcome, Outgoing, Unsent, Waiter, backoff

MAX_PERSONALIZATIONS = 1000
MAX_SUBSTITUTION_BYTES = 10_000
RETRY_STATUSES = {429, 500, 502, 503, 504}


def _keys(parts: tuple[Part, ...], kind: str) -> str:
    return "".join(p if isinstance(p, str) else f"~{kind}{p}~" for p in parts)


class SendGridTransport:
    name = "sendgrid"
    batch_size = MAX_PERSONALIZATIONS

    def __init__(self, settings: Settings, waiter: Waiter) -> None:
        self.settings = settings
        self.waiter = waiter
        self.url = settings.sendgrid_url
        self._client = None
        self._templates: dict[int, dict] = {}

    def describe(self) -> str:
        return f"SendGrid ({self.url})"

    def open(self) -> None:
        from sendgrid import SendGridAPIClient

        self._client = SendGridAPIClient(api_key=self.settings.sendgrid_api_key, host=self.url)
        self._client.client.timeout = self.settings.timeout

    def close(self) -> None:
        self._client = None

    def _template(self, compiled: CompiledEmail) -> dict:
        """The request body shared by every batch of this message, substitution keys in place."""
        cached = self._templates.get(id(compiled))
        if cached is not None:
            return cached
        message = compiled.message
        literals = "".join(
            p for p in compiled.html + compiled.text + compiled.subject if isinstance(p, str)
        )
        if "~h" in literals or "~t" in literals:
            # Never let a literal "~h1~" in the letter be taken for a placeholder.
            literals_ok = all(
                f"~h{i}~" not in literals and f"~t{i}~" not in literals
                for i in range(len(compiled.slots.keys))
            )
            if not literals_ok:
                raise Unsent(
                    f"{message.shown}: contains text like '~h1~' that clashes with "
                    "SendGrid substitution keys; reword it"
                )
        body: dict = {
            "from": {
                "email": message.sender.email,
                **({"name": message.sender.name} if message.sender.name else {}),
            },
            "subject": _keys(compiled.subject, "t"),
            "content": [
                {"type": "text/plain", "value": _keys(compiled.text, "t")},
                {"type": "text/html", "value": _keys(compiled.html, "h")},
            ],
            "headers": {"X-Bulletin-Reference": message.reference},
            "tracking_settings": {"subscription_tracking": {"enable": False}},
        }
        if message.reply_to:
            body["reply_to"] = {
                "email": message.reply_to.email,
                **({"name": message.reply_to.name} if message.reply_to.name else {}),
            }
        if message.category:
            body["categories"] = [message.category]
        html_slots = {p for p in compiled.html if isinstance(p, int)}
        text_slots = {p for p in compiled.text + compiled.subject if isinstance(p, int)}
        self._templates[id(compiled)] = cached = {
            "body": body,
            "html_slots": sorted(html_slots),
            "text_slots": sorted(text_slots),
        }
        return cached

    def _personalization(
        self, compiled: CompiledEmail, template: dict, item: Outgoing
    ) -> tuple[dict | None, str | None]:
        # Once per recipient, 100,000 times a send: kept lean (issue 7 profile).
        values = compiled.values(item.contact, item.unsubscribe_url)
        substitutions = {f"~t{i}~": values[i] for i in template["text_slots"]}
        substitutions.update({f"~h{i}~": escape(values[i]) for i in template["html_slots"]})
        size = len("".join(substitutions).encode()) + len("".join(substitutions.values()).encode())
        if size > MAX_SUBSTITUTION_BYTES:
            return None, (
                f"personal fields too large for SendGrid ({size:,} bytes of "
                f"substitutions, limit {MAX_SUBSTITUTION_BYTES:,})"
            )
        email, name = item.contact.email, item.contact.name
        if has_line_break(email + name):
            return None, "line break in the name or address"
        to = {"email": email}
        if name:
            to["name"] = name
        personalization = {
            "to": [to],
            "substitutions": substitutions,
            "custom_args": {k: str(v) for k, v in item.custom_args.items()},
        }
        if item.unsubscribe_url:
            personalization["headers"] = {
                "List-Unsubscribe": f"<{item.unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        if item.subject_prefix:
            personalization["subject"] = item.subject_prefix + template["body"]["subject"]
        return personalization, None

    def send(self, compiled: CompiledEmail, batch: list[Outgoing]) -> list[Outcome]:
        template = self._template(compiled)
        outcomes: list[Outcome] = []
        personalizations, included = [], []
        for item in batch:
            personalization, error = self._personalization(compiled, template, item)
            if error:
                outcomes.append(Outcome(item.delivery_id, State.FAILED, error=error))
            else:
                personalizations.append(personalization)
                included.append(item)
        if not personalizations:
            return outcomes
        body = dict(template["body"], personalizations=personalizations)
        try:
            state, message_id, error = self._post(body)
        except Unsent as stop:
            stop.outcomes = outcomes  # recipients failed here, before the request
            raise
        return outcomes + [Outcome(i.delivery_id, state, message_id, error) for i in included]

    def _post(self, body: dict) -> tuple[State, str | None, str | None]:
        """Send one request, retrying only when SendGrid certainly did not accept it."""
        from python_http_client import exceptions

        attempt = 0
        while True:
            try:
                response = self._client.client.mail.send.post(request_body=body)
            except exceptions.HTTPError as error:
                status = error.status_code
                detail = _error_text(error)
                if status in (401, 403):
                    raise Unsent(
                        f"SendGrid refused the API key ({status}: {detail}); check "
                        "SENDGRID_API_KEY in .env and its Mail Send permission"
                    ) from None
                if status in RETRY_STATUSES and attempt < self.settings.retries:
                    if not self.waiter.wait(self._delay(error, attempt)):
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
