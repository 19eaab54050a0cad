"""Loopback stand-ins for SendGrid's v3 Mail Send API and for an SMTP server.

Nothing here touches the network: both servers listen on 127.0.0.1 on an OS-picked port.

``SendGridStub`` -- ``POST /v3/mail/send`` on a ``ThreadingHTTPServer``::

    with SendGridStub(api_key="SG.test") as sg:
        client = SendGridAPIClient(api_key="SG.test", host=sg.url)
        sg.script(rate_limited(), slow(1.0))    # 1st request: 429, 2nd: 202 after 1 s
        ...
        assert max(sg.delivered_emails().values()) == 1

It checks auth and validates the body like the real API (``validate_mail_send``, including the
shape of ``tracking_settings``), answers 202 with an ``X-Message-Id`` header, and logs accepted
requests in ``sg.accepted``. ``expand_request(body, order, passes)`` builds each recipient's
email from a body the ways SendGrid might fill substitutions (its order is not documented).

Faults (``Fault``, built with the functions below) are queued with ``sg.script(*faults)`` and
consumed one per ``POST /v3/mail/send`` in arrival order, *before* auth and validation; once
the queue is empty the stub behaves normally. ``sg.fault_log`` lists ``(request_no, fault)``.

- ``status(code, body=None, headers=None)`` -- answer ``code`` (default body: SendGrid-style
  ``{"errors": [...]}``); never accepted. ``rate_limited(reset_in=1, retry_after=1)`` is a 429
  with ``X-RateLimit-*`` (reset computed when answering) and ``Retry-After`` headers.
- ``slow(seconds)`` -- read, log as accepted if valid, sleep, then answer normally (202). The
  mail "went out" even if the client timed out meanwhile.
- ``drop_after_read(reset=False)`` -- read, log as accepted if valid, then close the socket
  without answering (FIN: client sees an empty reply; ``reset=True``: an RST).
- ``drop_before_read(reset=True)`` -- close without reading the body; nothing accepted.
- ``garbage(status=202)`` -- answer ``status`` with a non-JSON body and no ``X-Message-Id``;
  a valid request is still logged as accepted when ``status`` is 2xx.

``SmtpSink`` -- an aiosmtpd server that records messages it answers 250 to::

    with SmtpSink(auth=("user", "pass")) as smtp:
        smtp.fail_recipient("gone@example.org", 550, "5.1.1 No such user")
        smtp.script(data_reply(451, "4.3.0 Try later"), drop_mid_data())
        ...

Its faults (``SmtpFault``) are consumed one per message at the end of DATA:
``data_reply(code, text)`` (421 also closes the connection) and ``drop_mid_data()`` (close the
connection instead of replying; nothing recorded). ``fail_recipient`` answers RCPT for one
address (``times=None``: always).
"""

from __future__ import annotations

import email
import email.policy
import http
import json
import os
import re
import secrets
import socket
import struct
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "MAIL_SEND_PATH",
    "Fault",
    "SendGridStub",
    "SmtpFault",
    "SmtpSink",
    "data_reply",
    "drop_after_read",
    "drop_before_read",
    "drop_mid_data",
    "expand",
    "expand_request",
    "free_port",
    "garbage",
    "held",
    "rate_limited",
    "slow",
    "status",
    "validate_mail_send",
]

MAIL_SEND_PATH = "/v3/mail/send"
AUTH_ERROR_BODY = (
    b'{"errors":[{"field":null,"message":"The provided authorization grant is invalid, '
    b'expired, or revoked","help":null}]}'
)
MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SUBSTITUTIONS_BYTES = 10_000
MAX_SUBSTITUTIONS = 100
# tracking_settings: each setting's fields and their types (v3 Mail Send reference). SendGrid
# may ignore a field it does not know; the stand-in refuses it, to catch a misspelt setting.
TRACKING_SETTINGS: dict[str, dict[str, type]] = {
    "click_tracking": {"enable": bool, "enable_text": bool},
    "open_tracking": {"enable": bool, "substitution_tag": str},
    "subscription_tracking": {"enable": bool, "text": str, "html": str, "substitution_tag": str},
    "ganalytics": {
        "enable": bool,
        "utm_source": str,
        "utm_medium": str,
        "utm_term": str,
        "utm_content": str,
        "utm_campaign": str,
    },
}
MAX_CATEGORIES = 10
MAX_CATEGORY_CHARS = 255
MAX_BODY_BYTES = 30 * 1024 * 1024
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)
_HELP = "http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.{}"
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_GARBAGE = b"<html>\r\n<head><title>upstream hiccup</title></head>\x00\xff\xfe{not json"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _errors_body(message: str, field_: str | None = None) -> bytes:
    return json.dumps({"errors": [{"field": field_, "message": message, "help": None}]}).encode()


# --------------------------------------------------------------------------- validation


def _valid_email(value: Any) -> bool:
    return isinstance(value, str) and _EMAIL_RE.fullmatch(value) is not None


class _Errors(list[dict[str, Any]]):
    def add(self, message: str, field_: str | None, anchor: str | None = None) -> None:
        self.append(
            {"message": message, "field": field_, "help": _HELP.format(anchor) if anchor else None}
        )


def _check_str_map(errors: _Errors, value: Any, name: str, fld: str) -> dict[str, Any]:
    """Check ``value`` is an object of string values; return it (or {} if not an object)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(f"The {name} parameter must be an object.", fld, name)
        return {}
    for key, val in value.items():
        if not isinstance(val, str):
            errors.add(
                f"Invalid type. Expected: string, given: {type(val).__name__}.",
                f"{fld}.{key}",
                name,
            )
    return value


def _check_headers(errors: _Errors, value: Any, fld: str) -> None:
    for key in _check_str_map(errors, value, "headers", fld):
        if key.lower() in RESERVED_HEADERS:
            errors.add(
                f"The header '{key}' is reserved and cannot be set.", f"{fld}.{key}", "headers"
            )


def validate_mail_send(body: Any) -> list[dict[str, Any]]:
    """Validate a v3 mail-send body like SendGrid does; return ``[{message, field, help}]``."""
    errors = _Errors()
    if not isinstance(body, dict):
        errors.add("The request body must be a JSON object.", None)
        return errors
    templated = isinstance(body.get("template_id"), str) and bool(body["template_id"])

    frm = body.get("from")
    if not isinstance(frm, dict) or "email" not in frm:
        errors.add(
            "The from object must be provided for every email send. It is an object that "
            'requires the email parameter, but may also contain a name parameter.  e.g. {"email" '
            ': "example@example.com"}',
            "from.email",
            "from",
        )
    elif not _valid_email(frm["email"]):
        errors.add("The from email does not contain a valid address.", "from.email", "from")
    if "reply_to" in body:
        rt = body["reply_to"]
        if not isinstance(rt, dict) or not _valid_email(rt.get("email")):
            errors.add(
                "The reply_to email does not contain a valid address.", "reply_to.email", "reply_to"
            )

    subject = body.get("subject")
    has_top_subject = isinstance(subject, str) and bool(subject)
    if "subject" in body and not isinstance(subject, str):
        errors.add("The subject must be a string.", "subject", "subject")

    top_args = _check_str_map(errors, body.get("custom_args"), "custom_args", "custom_args")
    _check_headers(errors, body.get("headers"), "headers")
    _validate_personalizations(
        errors, body.get("personalizations"), top_args, has_top_subject, templated
    )
    _validate_content(errors, body.get("content"), templated)
    _validate_tracking(errors, body.get("tracking_settings"))

    cats = body.get("categories")
    if cats is not None:
        if not isinstance(cats, list):
            errors.add("The categories parameter must be an array.", "categories", "categories")
        else:
            if len(cats) > MAX_CATEGORIES:
                errors.add(
                    f"The categories parameter may not have more than {MAX_CATEGORIES} items.",
                    "categories",
                    "categories",
                )
            for i, cat in enumerate(cats):
                if not isinstance(cat, str):
                    errors.add("A category must be a string.", f"categories.{i}", "categories")
                elif len(cat) > MAX_CATEGORY_CHARS:
                    errors.add(
                        f"A category cannot have more than {MAX_CATEGORY_CHARS} characters.",
                        f"categories.{i}",
                        "categories",
                    )
    return errors


def _validate_personalizations(
    errors: _Errors, ps: Any, top_args: Mapping[str, Any], has_top_subject: bool, templated: bool
) -> None:
    if not isinstance(ps, list) or not ps:
        errors.add(
            "The personalizations field is required and must have at least one personalization.",
            "personalizations",
            "personalizations",
        )
        return
    if len(ps) > MAX_PERSONALIZATIONS:
        errors.add(
            f"The personalizations field must have at most {MAX_PERSONALIZATIONS} items.",
            "personalizations",
            "personalizations",
        )
    seen: set[str] = set()
    duplicate_reported = False
    total = 0
    subject_missing = False
    for i, p in enumerate(ps):
        pf = f"personalizations.{i}"
        if not isinstance(p, dict):
            errors.add("A personalization must be an object.", pf, "personalizations")
            continue
        to = p.get("to")
        if not isinstance(to, list) or not to:
            errors.add(
                "The to array is required for all personalization objects, and must have at "
                "least one email object with a valid email address.",
                f"{pf}.to",
                "personalizations.to",
            )
        for kind in ("to", "cc", "bcc"):
            rcpts = p.get(kind)
            if rcpts is None:
                continue
            if not isinstance(rcpts, list):
                errors.add(f"The {kind} field must be an array.", f"{pf}.{kind}", kind)
                continue
            for j, rcpt in enumerate(rcpts):
                addr = rcpt.get("email") if isinstance(rcpt, dict) else None
                if not _valid_email(addr):
                    errors.add("Does not contain a valid address.", f"{pf}.{kind}.{j}.email", kind)
                    continue
                total += 1
                key = addr.lower()
                if key in seen and not duplicate_reported:
                    duplicate_reported = True
                    errors.add(
                        "Each email address in the personalization block should be unique "
                        "between to, cc, and bcc. We found the first duplicate instance of "
                        f"[{addr}] in the {pf}.{kind} field.",
                        f"{pf}.{kind}",
                        "personalizations",
                    )
                seen.add(key)
        if "subject" in p:
            if not isinstance(p["subject"], str) or not p["subject"]:
                errors.add("The subject must be a non-empty string.", f"{pf}.subject", "subject")
        elif not has_top_subject:
            subject_missing = True
        _check_headers(errors, p.get("headers"), f"{pf}.headers")

        subs = _check_str_map(
            errors, p.get("substitutions"), "substitutions", f"{pf}.substitutions"
        )
        if len(subs) > MAX_SUBSTITUTIONS:
            errors.add(
                f"You may not include more than {MAX_SUBSTITUTIONS} substitutions per "
                f"personalization (got {len(subs)}).",
                f"{pf}.substitutions",
                "substitutions",
            )
        size = sum(len(k.encode()) + len(str(v).encode()) for k, v in subs.items())
        if size > MAX_SUBSTITUTIONS_BYTES:
            errors.add(
                f"The substitutions of a personalization may not exceed "
                f"{MAX_SUBSTITUTIONS_BYTES} bytes (got {size}).",
                f"{pf}.substitutions",
                "substitutions",
            )
        args = _check_str_map(errors, p.get("custom_args"), "custom_args", f"{pf}.custom_args")
        merged = {**top_args, **args} if args else top_args
        if merged:
            size = len(json.dumps(merged, separators=(",", ":"), ensure_ascii=False).encode())
            if size > MAX_CUSTOM_ARGS_BYTES:
                errors.add(
                    f"The custom_args of a personalization (merged with the top-level "
                    f"custom_args) may not exceed {MAX_CUSTOM_ARGS_BYTES} bytes (got {size}).",
                    f"{pf}.custom_args",
                    "custom_args",
                )
    if total > MAX_RECIPIENTS:
        errors.add(
            f"The total number of recipients must be no more than {MAX_RECIPIENTS}. This "
            "includes all recipients defined within the to, cc, and bcc parameters, across each "
            "object that you include in the personalizations array.",
            "personalizations",
            "personalizations",
        )
    if subject_missing and not templated:
        errors.add(
            "The subject is required. You can get around this requirement if you use a template "
            "with a subject defined or if every personalization has a subject defined.",
            "subject",
            "subject",
        )


def _validate_tracking(errors: _Errors, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        errors.add("The tracking_settings parameter must be an object.", "tracking_settings")
        return
    for name, setting in value.items():
        fld = f"tracking_settings.{name}"
        fields_ = TRACKING_SETTINGS.get(name)
        if fields_ is None:
            errors.add(f"Unknown tracking setting '{name}'.", fld, "tracking_settings")
            continue
        if not isinstance(setting, dict):
            errors.add(f"The {name} setting must be an object.", fld, "tracking_settings")
            continue
        for key, item in setting.items():
            kind = fields_.get(key)
            if kind is None:
                errors.add(f"Unknown field '{key}' in {name}.", f"{fld}.{key}", "tracking_settings")
            elif not isinstance(item, kind):
                errors.add(
                    f"Invalid type. Expected: {'boolean' if kind is bool else 'string'}, "
                    f"given: {type(item).__name__}.",
                    f"{fld}.{key}",
                    "tracking_settings",
                )


# --------------------------------------------------------------------------- substitutions


SubstitutionOrder = Literal["given", "reversed", "at-once"]


def expand(
    text: str, substitutions: Mapping[str, str], order: SubstitutionOrder, passes: int = 1
) -> str:
    """Fill substitution tags in ``text`` one of the ways SendGrid might (it does not say).

    ``given`` / ``reversed``: one tag after another in the dict's order or its reverse, each
    replacement seeing what the earlier ones put in; ``at-once``: every tag in one sweep.
    ``passes`` repeats the whole expansion over its own result.
    """
    for _ in range(passes):
        if order == "at-once":
            if substitutions:
                pattern = re.compile("|".join(map(re.escape, sorted(substitutions, key=len)[::-1])))
                text = pattern.sub(lambda m: substitutions[m.group(0)], text)
            continue
        keys = list(substitutions)
        for key in reversed(keys) if order == "reversed" else keys:
            text = text.replace(key, substitutions[key])
    return text


def expand_request(
    body: Mapping[str, Any], order: SubstitutionOrder = "at-once", passes: int = 1
) -> list[dict[str, str]]:
    """Each personalization's email as SendGrid would build it: ``email``, ``subject``,
    ``text`` and ``html`` (the first text/plain and text/html content blocks)."""
    content = {block.get("type"): block.get("value", "") for block in body.get("content") or ()}
    out = []
    for p in body.get("personalizations") or ():
        subs = p.get("substitutions") or {}
        out.append(
            {
                "email": p["to"][0]["email"],
                "subject": expand(p.get("subject") or body.get("subject", ""), subs, order, passes),
                "text": expand(content.get("text/plain", ""), subs, order, passes),
                "html": expand(content.get("text/html", ""), subs, order, passes),
            }
        )
    return out


def _validate_content(errors: _Errors, content: Any, templated: bool) -> None:
    if content is None and templated:
        return
    if not isinstance(content, list) or not content:
        errors.add(
            "Unless a valid template_id is provided, the content parameter is required. There "
            "must be at least one defined content block.",
            "content",
            "content",
        )
        return
    types: list[Any] = []
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            errors.add("A content block must be an object.", f"content.{j}", "content")
            types.append(None)
            continue
        types.append(block.get("type"))
        if not isinstance(block.get("type"), str) or not block["type"]:
            errors.add(
                "The content type must be a non-empty string.", f"content.{j}.type", "content"
            )
        value = block.get("value")
        if not isinstance(value, str) or not value:
            errors.add(
                "The content value must be a string at least one character in length.",
                f"content.{j}.value",
                "content",
            )
    if "text/plain" in types and "text/html" in types:
        plain, html = types.index("text/plain"), types.index("text/html")
        if plain > html:
            errors.add(
                "If present, text/plain content must be first, followed by html content, "
                "followed by any other content.",
                f"content.{html}.type",
                "content",
            )


# --------------------------------------------------------------------------- SendGrid faults


FaultKind = Literal["status", "slow", "drop_after_read", "drop_before_read", "garbage"]


@dataclass(frozen=True, repr=False)
class Fault:
    """One scripted misbehaviour of ``SendGridStub``; build it with the helpers below."""

    kind: FaultKind
    code: int = 202
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    reset: bool = False
    reset_in: float | None = None  # status: add X-RateLimit-Reset = now + reset_in when answering
    gate: threading.Event | None = None  # slow: answer as soon as the test sets it

    def __str__(self) -> str:
        if self.kind in ("status", "garbage"):
            return f"{self.kind}({self.code})"
        if self.kind == "slow":
            return f"slow({self.seconds})"
        return f"{self.kind}(reset={self.reset})"

    __repr__ = __str__


def status(
    code: int,
    body: bytes | str | Mapping[str, Any] | list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Fault:
    """Answer ``code`` with ``body`` (JSON-encoded if not str/bytes; default: errors body)."""
    if body is None:
        if code == 401:
            raw = AUTH_ERROR_BODY
        else:
            try:
                phrase = http.HTTPStatus(code).phrase
            except ValueError:
                phrase = "error"
            raw = _errors_body(phrase.lower() if code == 429 else phrase)
    elif isinstance(body, bytes):
        raw = body
    elif isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps(body).encode()
    return Fault("status", code=code, body=raw, headers=dict(headers or {}))


def rate_limited(reset_in: float = 1, retry_after: int | None = 1, limit: int = 600) -> Fault:
    """429 with ``X-RateLimit-Limit/Remaining/Reset`` and (unless None) ``Retry-After``."""
    headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Fault(
        "status",
        code=429,
        body=_errors_body("too many requests"),
        headers=headers,
        reset_in=reset_in,
    )


def slow(seconds: float) -> Fault:
    """Read the request, log it as accepted, sleep ``seconds``, then answer normally."""
    return Fault("slow", seconds=seconds)


def held(gate: threading.Event, at_most: float = 60) -> Fault:
    """Like ``slow``, but answer when the test sets ``gate`` (at most ``at_most`` seconds):
    a request held open for as long as the test needs, however loaded the machine."""
    return Fault("slow", seconds=at_most, gate=gate)


def drop_after_read(reset: bool = False) -> Fault:
    """Read the request, log it as accepted, close without answering (RST if ``reset``)."""
    return Fault("drop_after_read", reset=reset)


def drop_before_read(reset: bool = True) -> Fault:
    """Close the connection without reading the body; nothing is accepted."""
    return Fault("drop_before_read", reset=reset)


def garbage(status: int = 202) -> Fault:
    """Answer ``status`` with a non-JSON body (a valid request still counts as accepted if 2xx)."""
    return Fault("garbage", code=status)


# --------------------------------------------------------------------------- SendGrid stub


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    stub: SendGridStub

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # client went away (e.g. timed out on a slow() fault): expected
        self.stub.server_errors.append(traceback.format_exc(limit=5))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "nginx"

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: no per-request output."""

    def do_POST(self) -> None:
        self.server.stub._handle(self, "POST")

    def do_GET(self) -> None:
        self.server.stub._handle(self, "GET")

    def do_PUT(self) -> None:
        self.server.stub._handle(self, "PUT")

    def do_PATCH(self) -> None:
        self.server.stub._handle(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server.stub._handle(self, "DELETE")

    def do_HEAD(self) -> None:
        self.server.stub._handle(self, "HEAD")


class SendGridStub:
    """A loopback ``POST /v3/mail/send`` that validates, answers and logs like SendGrid.

    Attributes: ``url`` (base URL, no trailing slash), ``host``, ``port``, ``requests`` (all
    requests received, any outcome), ``accepted`` (one dict per accepted request:
    ``request`` number, ``message_id``, ``emails`` = lowercased to-addresses in order,
    ``recipients`` = lowercased to+cc+bcc, and ``body`` if ``keep_bodies``), ``fault_log``
    (``(request_no, fault)``), ``server_errors`` (tracebacks of unexpected handler errors).
    """

    def __init__(
        self,
        api_key: str = "SG.test",
        *,
        keep_bodies: bool = True,
        host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.clock = clock  # the time X-RateLimit-Reset counts from (tests pass a fixed one)
        self.keep_bodies = keep_bodies
        self.accepted: list[dict[str, Any]] = []
        self.requests = 0
        self.fault_log: list[tuple[int, Fault]] = []
        self.server_errors: list[str] = []
        # Every mail-send request is answered `delay` seconds after it arrived (like real
        # SendGrid taking its time over 1,000 personalizations), its checks included; 0: at once.
        self.delay = 0.0
        self.arrivals: list[float] = []  # time.monotonic() as each mail-send request arrived
        self.at_once = 0  # mail-send requests being handled now
        self.most_at_once = 0  # the most handled at once since the last reset
        self._faults: deque[Fault] = deque()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server = _Server((host, 0), _Handler)
        self._server.stub = self
        self.host, self.port = self._server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"SendGridStub:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- public API

    def __enter__(self) -> SendGridStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (idempotent); sleeping ``slow`` handlers are woken and answer nothing."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def set_api_key(self, api_key: str) -> None:
        """Change the key expected in ``Authorization: Bearer <key>``."""
        self.api_key = api_key

    def script(self, *faults: Fault) -> None:
        """Queue faults, consumed one per mail-send request in arrival order."""
        with self._lock:
            self._faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        """Number of scripted faults not yet consumed."""
        with self._lock:
            return len(self._faults)

    def reset(self) -> None:
        """Clear logs, counters and scripted faults."""
        with self._lock:
            self.accepted.clear()
            self.requests = 0
            self.fault_log.clear()
            self.server_errors.clear()
            self._faults.clear()
            self.arrivals.clear()
            self.most_at_once = 0

    def delivered_emails(self) -> Counter[str]:
        """Count of every accepted (lowercased) to/cc/bcc address over all accepted requests."""
        with self._lock:
            return Counter(addr for rec in self.accepted for addr in rec["recipients"])

    def wait_accepted(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` requests were accepted; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.accepted) >= count, timeout)

    # -- request handling (server threads)

    def _handle(self, h: _Handler, method: str) -> None:
        with self._lock:
            self.requests += 1
            n = self.requests
        if h.path.split("?", 1)[0] != MAIL_SEND_PATH:
            self._drain(h)
            self._respond(h, 404, _errors_body("resource not found"))
            return
        if method != "POST":
            self._drain(h)
            self._respond(h, 405, _errors_body("method not allowed"), {"Allow": "POST"})
            return
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            h.close_connection = True  # unread chunks would poison a kept-alive connection
            self._respond(h, 411, _errors_body("Length Required"), {"Connection": "close"})
            return
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            if fault is not None:
                self.fault_log.append((n, fault))
            arrived = time.monotonic()
            self.arrivals.append(arrived)
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        h.awaiting = True
        try:
            self._mail_send(h, fault, n, arrived)
        finally:
            self._answered(h)

    def _answered(self, h: _Handler) -> None:
        """`h`'s request stops counting as at once just before its answer (or drop) goes: a
        client that sends its next request on reading the answer is not counted twice."""
        if getattr(h, "awaiting", False):
            h.awaiting = False
            with self._lock:
                self.at_once -= 1

    def _mail_send(self, h: _Handler, fault: Fault | None, n: int, arrived: float) -> None:
        if fault is not None and fault.kind == "drop_before_read":
            self._drop(h, fault.reset)
            return
        raw = self._read(h)
        if raw is None:
            self._respond(h, 413, _errors_body("Payload Too Large"))
            return
        if fault is not None and fault.kind == "status":
            headers = dict(fault.headers)
            if fault.reset_in is not None:
                headers["X-RateLimit-Reset"] = str(int(self.clock() + fault.reset_in))
            self._respond(h, fault.code, fault.body or b"", headers)
            return

        code, resp, parsed = self._check(h, raw)
        message_id = secrets.token_urlsafe(16)
        if code == 202 and (fault is None or fault.kind != "garbage" or 200 <= fault.code < 300):
            self._record(n, message_id, parsed)

        # `delay` counts from the request's arrival, as a client sees it: reading and checking
        # the body (tens of ms for 1,000 personalizations) happens within it.
        if self.delay and self._stopping.wait(max(0.0, arrived + self.delay - time.monotonic())):
            self._drop(h, reset=False)
            return
        if fault is None:
            pass
        elif fault.kind == "slow":
            deadline = time.monotonic() + fault.seconds
            while not (fault.gate is not None and fault.gate.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self._stopping.wait(min(left, 0.05 if fault.gate is not None else left)):
                    self._drop(h, reset=False)
                    return
        elif fault.kind == "drop_after_read":
            self._drop(h, fault.reset)
            return
        elif fault.kind == "garbage":
            self._respond(h, fault.code, _GARBAGE, content_type="text/html")
            return
        if code == 202:
            self._respond(h, 202, b"", {"X-Message-Id": message_id})
        else:
            self._respond(h, code, resp)

    def _check(self, h: _Handler, raw: bytes) -> tuple[int, bytes, Any]:
        if h.headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, AUTH_ERROR_BODY, None
        # The real API has refused a charset too (sendgrid-csharp #910, java-http-client #4).
        if h.headers.get("Content-Type") != "application/json":
            return 415, _errors_body("Content-Type should be application/json."), None
        try:
            parsed = json.loads(raw)
        except ValueError:
            return 400, _errors_body("Bad Request: the request body must be valid JSON."), None
        errors = validate_mail_send(parsed)
        if errors:
            return 400, json.dumps({"errors": errors}).encode(), parsed
        return 202, b"", parsed

    def _record(self, n: int, message_id: str, body: dict[str, Any]) -> None:
        emails: list[str] = []
        recipients: list[str] = []
        for p in body["personalizations"]:
            for kind in ("to", "cc", "bcc"):
                for rcpt in p.get(kind) or ():
                    addr = rcpt["email"].lower()
                    recipients.append(addr)
                    if kind == "to":
                        emails.append(addr)
        rec: dict[str, Any] = {
            "request": n,
            "message_id": message_id,
            "emails": emails,
            "recipients": recipients,
        }
        if self.keep_bodies:
            rec["body"] = body
        with self._lock:
            self.accepted.append(rec)
            self._lock.notify_all()

    @staticmethod
    def _length(h: _Handler) -> int:
        try:
            return max(0, int(h.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _read(self, h: _Handler) -> bytes | None:
        """Read the body; None (after draining it) if it is over the size limit."""
        length = self._length(h)
        if length > MAX_BODY_BYTES:
            self._drain(h)
            return None
        return h.rfile.read(length)

    def _drain(self, h: _Handler) -> None:
        remaining = self._length(h)
        while remaining > 0:
            chunk = h.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    @staticmethod
    def _respond(
        h: _Handler,
        code: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        h.server.stub._answered(h)
        h.send_response(code)
        if body:
            h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        if body and h.command != "HEAD":
            h.wfile.write(body)

    @staticmethod
    def _drop(h: _Handler, reset: bool) -> None:
        """Close the connection with no response: FIN, or RST if ``reset``."""
        h.server.stub._answered(h)
        h.close_connection = True
        sock = h.connection
        try:
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                os.close(sock.detach())  # a real close(2) now, despite rfile/wfile references
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


# --------------------------------------------------------------------------- SMTP sink


@dataclass(frozen=True, repr=False)
class SmtpFault:
    """One scripted misbehaviour of ``SmtpSink``, consumed at the end of a message's DATA."""

    kind: Literal["data_reply", "drop_mid_data"]
    code: int = 0
    text: str = ""

    def __str__(self) -> str:
        return f"data_reply({self.code})" if self.kind == "data_reply" else "drop_mid_data()"

    __repr__ = __str__


def data_reply(code: int, text: str | None = None) -> SmtpFault:
    """Answer the end of DATA with ``code text`` (421 then closes the connection)."""
    default = {
        421: "4.3.2 Service shutting down",
        451: "4.3.0 Temporary failure, try later",
        550: "5.7.1 Message rejected",
    }.get(code, "Scripted reply")
    return SmtpFault("data_reply", code, text or default)


def drop_mid_data() -> SmtpFault:
    """Close the connection instead of answering DATA; the message is not recorded."""
    return SmtpFault("drop_mid_data")


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.sink.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.sink._recipient_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sink = self.sink
        with sink._lock:
            sink._message_no += 1
            fault = sink._faults.popleft() if sink._faults else None
            if fault is not None:
                sink.fault_log.append((sink._message_no, fault))
        if fault is not None and fault.kind == "drop_mid_data":
            if server.transport is not None:
                server.transport.close()
            return "421 4.3.2 dropped"  # never reaches the client: the transport is closed
        if fault is not None and fault.code != 250:
            if fault.code == 421 and server.transport is not None:
                server.loop.call_soon(server.transport.close)  # after the reply is written
            return f"{fault.code} {fault.text}"
        raw = envelope.original_content or b""
        with sink._lock:
            sink.messages.append((envelope.mail_from or "", list(envelope.rcpt_tos), bytes(raw)))
        return "250 OK: queued"


class SmtpSink:
    """An aiosmtpd server on 127.0.0.1 that records the messages it answers 250 to."""

    def __init__(
        self,
        auth: tuple[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        ready_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.auth = auth
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.fault_log: list[tuple[int, SmtpFault]] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        self._faults: deque[SmtpFault] = deque()
        self._rcpt_faults: dict[str, list[Any]] = {}  # address -> [reply, times left or None]
        self._message_no = 0
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {}
        if auth is not None:
            kwargs = {"authenticator": self._authenticate, "auth_require_tls": False}
        last_error: OSError | None = None
        for _ in range(5):  # the free port may be taken between probe and bind: retry
            self.port = free_port(host)
            self._controller = Controller(
                _SinkHandler(self),
                hostname=host,
                port=self.port,
                ready_timeout=ready_timeout,
                server_hostname="sink.bulletin.test",
                **kwargs,
            )
            try:
                self._controller.start()
            except OSError as err:
                last_error = err
                self._controller.loop.close()
                continue
            break
        else:
            raise RuntimeError(f"SmtpSink could not bind on {host}") from last_error
        self._stopped = False

    def __enter__(self) -> SmtpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        if not self._stopped:
            self._stopped = True
            self._controller.stop()

    def script(self, *faults: SmtpFault) -> None:
        """Queue faults, consumed one per message (at the end of DATA)."""
        with self._lock:
            self._faults.extend(faults)

    def fail_recipient(
        self,
        address: str,
        code: int = 550,
        text: str = "5.1.1 No such user",
        times: int | None = None,
    ) -> None:
        """Answer RCPT TO ``address`` with ``code text`` (``times`` times; None = always)."""
        with self._lock:
            self._rcpt_faults[address.lower()] = [f"{code} {text}", times]

    def reset(self) -> None:
        """Clear messages, logs and faults."""
        with self._lock:
            self.messages.clear()
            self.fault_log.clear()
            self.auth_attempts.clear()
            self._faults.clear()
            self._rcpt_faults.clear()
            self._message_no = 0

    def parsed(self) -> list[EmailMessage]:
        """The recorded messages parsed with ``email.policy.default`` (CRLF read as LF)."""
        with self._lock:
            raws = [raw.replace(b"\r\n", b"\n") for _, _, raw in self.messages]
        return [email.message_from_bytes(raw, policy=email.policy.default) for raw in raws]

    def delivered_emails(self) -> Counter[str]:
        """Count of every (lowercased) envelope recipient of recorded messages."""
        with self._lock:
            return Counter(rcpt.lower() for _, rcpts, _ in self.messages for rcpt in rcpts)

    # -- hooks (event-loop thread)

    def _recipient_reply(self, address: str) -> str | None:
        with self._lock:
            entry = self._rcpt_faults.get(address.lower())
            if entry is None:
                return None
            reply, left = entry
            if left is not None:
                if left <= 0:
                    return None
                entry[1] = left - 1
            return reply

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = False
        user = ""
        if isinstance(data, LoginPassword) and self.auth is not None:
            user = data.login.decode(errors="replace")
            ok = (user, data.password.decode(errors="replace")) == self.auth
        with self._lock:
            self.auth_attempts.append((user, ok))
        if ok:
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)
