"""`bulletin events serve`: SendGrid's Event Webhook and the one-click unsubscribe pages.

One Starlette app, run by uvicorn (bulletin/web/serving.py); TLS and the public name belong to
the reverse proxy in front. The whole surface is four routes:

- `POST /events`: a JSON array of SendGrid events, verified (ECDSA P-256 / SHA-256 over the
  timestamp header value followed by the raw body) when SENDGRID_WEBHOOK_PUBLIC_KEY is set.
  A post without the signature headers, or with a stale timestamp, is refused before its body
  is read; bodies are capped at 5 MB and must arrive within 30 s in all. Answers 200 only
  after the batch is committed, so SendGrid retries anything we lost.
- `GET /unsubscribe?t=TOKEN`: a confirmation page with a button (templates/unsubscribe.html);
  changes nothing, so link scanners cannot unsubscribe anyone.
- `POST /unsubscribe?t=TOKEN`: RFC 8058 one-click (or the page's button): suppresses at once.
- `GET /m/<reference>` (and `…/notice.pdf`): public pages of sent messages (web/public.py).

Everything else is 404. Tokens never reach the log; paths reach it with control characters
escaped. Database work runs in a thread, never on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bulletin.config import Settings
from bulletin.errors import BulletinError, ConfigError
from bulletin.events import (
    Event,
    NotAnArray,
    Tally,
    apply_events,
    array_items,
    parse_event,
    unsubscribe_by_link,
)
from bulletin.tracking import Tracker
from bulletin.unsubscribe import parse_token, verify_token
from bulletin.web.common import (
    BODY_DEADLINE,
    BodyRefused,
    BodyTimedOut,
    printable,
    read_body,
    without_query,
)
from bulletin.web.feedback import routes as feedback_routes

MAX_BODY = 5 * 1024 * 1024  # SendGrid batches stay far below this
MAX_FORM = 64 * 1024
TOLERANCE = 600  # seconds a signed post's timestamp may differ from our clock
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
WORKER_OPTIONS = "_BULLETIN_EVENTS_SERVE"  # how `--workers` hands options to its processes
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def load_public_key(text: str):
    """SendGrid's verification key: base64 DER SubjectPublicKeyInfo (PEM accepted too)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise ConfigError(
            "SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid public key; copy the verification key "
            "from SendGrid (Settings → Mail Settings → Event Webhook → Signature Verification)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError("SENDGRID_WEBHOOK_PUBLIC_KEY must be an ECDSA P-256 key (SendGrid's)")
    return key


def check_headers(
    signature: str | None,
    timestamp: str | None,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> str | None:
    """None if the signature headers are present and fresh; otherwise why the post is refused.

    Looked at before the body is read, so an unsigned or replayed post costs us no reading.
    """
    if not signature or not timestamp:
        return "missing signature headers"
    # isdigit() alone accepts "²" and other digits int() refuses (issue 12, finding 6).
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return "malformed timestamp"
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:
        return "timestamp outside the allowed window (replayed or clock skew)"
    return None


def check_signature(
    key,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = TOLERANCE,
) -> str | None:
    """None if SendGrid signed this body recently; otherwise why the post is refused."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    problem = check_headers(signature, timestamp, now=now, tolerance=tolerance)
    if problem:
        return problem
    assert signature is not None and timestamp is not None
    try:
        der = base64.b64decode(signature.strip(), validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return "signature does not verify"
    return None


class Unavailable(Exception):
    """Answer 503: the database is busy or the server is stopping; try again later."""


class Webhook:
    """What the requests share: settings, the key, the tracker (one connection, behind a lock)."""

    def __init__(
        self,
        settings: Settings,
        *,
        insecure: bool = False,
        log: Callable[[str], None] = lambda line: None,
        tolerance: float = TOLERANCE,
        db_timeout: float = 10.0,
        body_deadline: float = BODY_DEADLINE,
    ) -> None:
        self.settings = settings
        self.body_deadline = body_deadline
        self.key = (
            load_public_key(settings.webhook_public_key) if settings.webhook_public_key else None
        )
        if self.key is None and not insecure:
            raise ConfigError(
                "SENDGRID_WEBHOOK_PUBLIC_KEY is not set, so anyone could post fake events; set "
                "it in .env (SendGrid → Mail Settings → Event Webhook → Signature "
                "Verification), or pass --insecure for a local test"
            )
        self.insecure = self.key is None
        self.log = log
        self.tolerance = tolerance
        self.lock = threading.Lock()
        self.tracker = Tracker(settings.db_url, timeout=db_timeout, secret=settings.secret)
        try:
            self.tracker.prepare_events()  # the first post then costs no more than the rest
        except BaseException:
            self.tracker.close()
            raise
        self.closed = False
        self._templates = None

    def close(self) -> None:
        with self.lock:  # waits for a batch being committed
            if not self.closed:
                self.closed = True
                self.tracker.close()

    def _check_open(self) -> None:
        if self.closed:
            raise Unavailable("shutting down")

    # --- work done in a thread ---

    def apply(self, body: bytes) -> tuple[int, dict[str, int] | str, str]:
        """(status, tally or error text, log note) for a verified body."""
        try:
            items = array_items(body)
        except NotAnArray:
            return 400, "Expected a JSON array of events.", "not a JSON array"
        except (ValueError, RecursionError):  # UnicodeDecodeError included; deep nesting
            return 400, "The body is not JSON.", "not JSON"
        events: list[Event] = []
        malformed = 0
        for item, text in items:
            try:
                event = parse_event(item, text)
                event.payload.encode()  # a lone surrogate anywhere in it cannot be stored
            except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError included
                malformed += 1
                continue
            events.append(event)
        with self.lock:
            self._check_open()
            try:
                tally = apply_events(self.tracker, events)
            except BulletinError:
                raise
            except Exception:  # a bug or an event we cannot store: never lose the good ones
                self.log(traceback.format_exc().rstrip())
                tally, failed = self._one_by_one(events)
                malformed += failed
        tally.malformed = malformed
        note = (
            f"{tally.received} event(s): {tally.applied} applied, {tally.duplicates} duplicate, "
            f"{tally.unknown} unknown delivery, {tally.suppressed} suppressed"
            + (f", {malformed} malformed" if malformed else "")
        )
        return 200, tally.as_dict(), note

    def receive(
        self, signature: str | None, timestamp: str | None, body: bytes
    ) -> tuple[int, dict[str, int] | str, str]:
        """Verify a posted body (when a key is set), then apply it: one trip to a worker thread
        per post, not two."""
        if self.key is not None:
            problem = check_signature(
                self.key, signature, timestamp, body, tolerance=self.tolerance
            )
            if problem:
                return 403, "Forbidden: the signature does not verify.", f"refused: {problem}"
        return self.apply(body)

    def _one_by_one(self, events: list[Event]) -> tuple[Tally, int]:
        """Apply events singly after a batch failed (issue 12, finding 5): skip those that fail."""
        tally, failed = Tally(), 0
        for event in events:
            try:
                tally.add(apply_events(self.tracker, [event]))
            except BulletinError:
                raise
            except Exception:
                failed += 1
        return tally, failed

    def delivery_for(self, token: str):
        """The delivery a well-signed token names, or None."""
        if not self.settings.secret:
            raise Unavailable("BULLETIN_SECRET is not set: unsubscribe links cannot be checked")
        parsed = parse_token(token)
        if parsed is None:
            return None
        send_id, delivery_id, _ = parsed
        with self.lock:
            self._check_open()
            row = self.tracker.get_delivery(delivery_id)
        if row is None or row["send_id"] != send_id:
            return None
        return row if verify_token(self.settings.secret, token, row["email"]) else None

    def page_for_link(self, token: str) -> tuple[int, str, str]:
        row = self.delivery_for(token)
        if row is None:
            return 400, self.page("unsubscribe.html", state="invalid"), "bad token"
        with self.lock:
            self._check_open()
            already = self.tracker.is_suppressed(row["email"])
        state = "already" if already else "confirm"
        return (
            200,
            self.page("unsubscribe.html", state=state, who=_masked(row["email"]), token=token),
            "",
        )

    def unsubscribe(self, token: str) -> tuple[int, str, str]:
        row = self.delivery_for(token)
        if row is None:
            return 400, self.page("unsubscribe.html", state="invalid"), "bad token"
        with self.lock:
            self._check_open()
            added = unsubscribe_by_link(self.tracker, row["id"])
        note = f"delivery {row['id']} unsubscribed" + ("" if added else " (already)")
        return 200, self.page("unsubscribed.html", who=_masked(row["email"])), note

    def page(self, name: str, **context: Any) -> str:
        """A page from templates/ (the working folder's copy first), autoescaped."""
        import jinja2
        from markupsafe import Markup

        from bulletin.render import template_environment, template_problem

        if self._templates is None:
            self._templates = template_environment(self.settings.workdir)
        sender = " · ".join(s for s in (self.settings.organisation, self.settings.unit) if s)
        values = {"state": "", "who": "", "token": "", "sender": sender, **context}
        # Escaped here as html.escape does (&#x27; for '), so the pages read as they always did.
        values = {k: Markup(html.escape(v)) for k, v in values.items()}
        try:
            return self._templates.get_template(name).render(values)
        except jinja2.TemplateError as error:
            raise Unavailable(str(template_problem(error, self.settings.workdir))) from None


def _masked(email: str) -> str:
    """`m•••••t@example.org`: enough to recognise whose subscription it is, not enough to
    harvest from a forwarded link (issue 21). Always five dots: the length is not told."""
    local, _, domain = email.partition("@")
    ends = local[0] + "•••••" + (local[-1] if len(local) > 2 else "")
    return (ends if local else "") + "@" + domain


def _form_token(content_type: str, body: bytes) -> str:
    """The `t` field of a urlencoded or multipart POST body, if there is one."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
        )
        if message.is_multipart():
            for part in message.iter_parts():
                if part.get_param("name", header="content-disposition") == "t":
                    payload = part.get_payload(decode=True) or b""
                    return payload.decode("utf-8", "replace").strip()
        return ""
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return (fields.get("t") or [""])[0].strip()


# --- the ASGI app ------------------------------------------------------------------------------


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return Response(text + "\n", status, headers, media_type="text/plain; charset=utf-8")


def _html(status: int, page: str) -> Response:
    return Response(page, status, media_type="text/html; charset=utf-8")


def _note(request: Request, text: str) -> None:
    request.scope["bulletin.note"] = text


def _closing(response: Response) -> Response:
    """Hang up after this answer: the body it did not read must not be taken for a request."""
    response.headers["Connection"] = "close"
    return response


async def _body(request: Request, limit: int, deadline: float) -> bytes | Response | None:
    try:
        return await read_body(request, limit, deadline=deadline)
    except BodyRefused as refused:
        _note(request, refused.note)
        return _closing(_text(refused.status, refused.text))
    except BodyTimedOut:
        _note(request, "the body did not arrive in time")
        return _closing(_text(408, "The request body took too long."))


def signed_link_page(webhook, limit: int, show: Callable, submit: Callable) -> Callable:
    """The handler of a page reached by a signed link (unsubscribe, feedback, approval).

    GET and HEAD only show it: `show(request, token)`; POST acts on the form, read within `limit`
    bytes and the request deadline: `submit(request, token, body)`. Both run in a thread and
    return (status, page, note); opening a link never changes state.
    """

    async def handler(request: Request) -> Response:
        token = (request.query_params.get("t") or "").strip()
        if request.method in ("GET", "HEAD"):
            status, page, note = await run_in_threadpool(show, request, token)
        elif request.method != "POST":
            return _text(405, "Method not allowed.", {"Allow": "GET, HEAD, POST"})
        else:
            body = await _body(request, limit, webhook.body_deadline)
            if body is None:
                return _closing(_text(400, "Incomplete body."))
            if isinstance(body, Response):
                return body
            status, page, note = await run_in_threadpool(submit, request, token, body)
        _note(request, note)
        return _html(status, page)

    return handler


def create_app(webhook: Webhook) -> Starlette:
    """The Starlette app serving /events and /unsubscribe for `webhook`."""
    from anyio._backends import _asyncio  # noqa: F401  # loaded now, not by the first post

    from bulletin.web import approval

    async def events(request: Request) -> Response:
        if request.method != "POST":
            return _text(405, "Method not allowed.", {"Allow": "POST"})
        headers = request.headers
        if "transfer-encoding" in headers:
            return _closing(_text(411, "Send a Content-Length, not chunks."))
        if webhook.key is not None:
            problem = check_headers(
                headers.get(SIGNATURE_HEADER),
                headers.get(TIMESTAMP_HEADER),
                tolerance=webhook.tolerance,
            )
            if problem:  # before reading a byte of the body (issue 12, finding 3)
                _note(request, f"refused: {problem}")
                return _closing(_text(403, "Forbidden: the signature does not verify."))
        body = await _body(request, MAX_BODY, webhook.body_deadline)
        if body is None:
            _note(request, "the client went away mid-body")
            return _closing(_text(400, "Incomplete body."))
        if isinstance(body, Response):
            return body
        status, answer, note = await run_in_threadpool(
            webhook.receive, headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER), body
        )
        _note(request, note)
        if isinstance(answer, str):
            return _text(status, answer)
        return JSONResponse(answer, status)

    def unsubscribe_by_form(request: Request, token: str, body: bytes):
        token = token or _form_token(request.headers.get("content-type", ""), body)
        return webhook.unsubscribe(token)

    unsubscribe = signed_link_page(
        webhook, MAX_FORM, lambda request, token: webhook.page_for_link(token), unsubscribe_by_form
    )

    async def not_found(request: Request) -> Response:
        return _text(404, "Not found.")

    async def unavailable(request: Request, error: Exception) -> Response:
        _note(request, str(error))
        return _text(
            503, "Temporarily unavailable; please try again in a minute.", {"Retry-After": "60"}
        )

    async def internal(request: Request, error: Exception) -> Response:
        _note(request, f"internal error: {error!r}")  # the traceback is logged by Guard
        return _closing(_text(500, "Internal error; please try again."))

    from bulletin.web import public

    app = Starlette(
        exception_handlers={Unavailable: unavailable, BulletinError: unavailable, 500: internal},
        routes=[
            Route("/events", events, methods=METHODS),
            Route("/unsubscribe", unsubscribe, methods=METHODS),
            *feedback_routes(webhook),  # "Was this useful?" pages (issue 18)
            *approval.routes(webhook),  # /approve: sign-off before send (issue 17)
            *public.routes(webhook),  # /m/<reference>: public pages of sent messages (issue 21)
            Route("/{path:path}", not_found, methods=METHODS),
        ],
    )
    app.router.redirect_slashes = False
    return Guard(app, webhook)


class Guard:
    """ASGI middleware: security headers, a 503/500 for failures, one safe log line a request."""

    def __init__(self, app: Starlette, webhook: Webhook) -> None:
        self.app, self.webhook = app, webhook

    def close(self) -> None:
        self.webhook.close()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 0, "started": False}
        extra = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), *extra]}
                self.log_line(scope, message["status"])  # before the client can read it
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except (Unavailable, BulletinError) as error:
            scope["bulletin.note"] = str(error)
            if not status["started"]:
                await _text(
                    503,
                    "Temporarily unavailable; please try again in a minute.",
                    {"Retry-After": "60"},
                )(scope, receive, sending)
        except Exception as error:  # a bug: answer 500 so SendGrid retries, and say what
            scope["bulletin.note"] = f"internal error: {error!r}"
            self.webhook.log(traceback.format_exc().rstrip())
            if not status["started"]:
                await _closing(_text(500, "Internal error; please try again."))(
                    scope, receive, sending
                )

    def log_line(self, scope, code: int) -> None:
        client = (scope.get("client") or ("-",))[0]
        note = scope.get("bulletin.note", "")
        path = printable(without_query(scope.get("path", "")))
        self.webhook.log(
            f"{client} {printable(scope['method'], 16)} {path} {code}"
            + (f" {printable(note, 200)}" if note else "")
        )


# --- starting -------------------------------------------------------------------------------


def make_server(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8025,
    *,
    insecure: bool = False,
    log: Callable[[str], None] = lambda line: None,
    tolerance: float = TOLERANCE,
    db_timeout: float = 10.0,
    body_deadline: float = BODY_DEADLINE,
    **options: Any,
):
    """A bound, not yet serving, server (`serving.WebServer`); ConfigError if it cannot start."""
    from bulletin.web.serving import WebServer

    webhook = Webhook(
        settings,
        insecure=insecure,
        log=log,
        tolerance=tolerance,
        db_timeout=db_timeout,
        body_deadline=body_deadline,
    )
    try:
        return WebServer(create_app(webhook), host, port, **options)
    except BaseException:
        webhook.close()
        raise


def startup_warnings(settings: Settings, host: str, insecure: bool) -> list[str]:
    """What the operator must know before trusting this server."""
    lines = []
    if insecure:
        lines.append(
            "WARNING: --insecure: event posts are NOT verified. Anyone who can reach this port "
            "can fake delivery results and put addresses on the suppression list. Use it only "
            "for a local test; set SENDGRID_WEBHOOK_PUBLIC_KEY for real use."
        )
    if not settings.secret:
        lines.append(
            "warning: BULLETIN_SECRET is not set, so unsubscribe links cannot be checked; "
            "/unsubscribe answers 503 until it is set"
        )
    if host not in ("127.0.0.1", "::1", "localhost"):
        lines.append(
            f"warning: listening on {host}, not 127.0.0.1; make sure only your reverse proxy "
            "can reach this port"
        )
    return lines


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    insecure: bool,
    workers: int = 1,
    log: Callable[[str], None],
) -> None:
    """Check the settings, say where we listen, and serve until Ctrl-C or SIGTERM.

    With `workers` > 1, that many processes share the socket and the SQLite database (WAL,
    a busy time-out, one short transaction per post; events are de-duplicated by a UNIQUE
    sg_event_id, so two processes never apply one event twice).
    """
    from bulletin.web import serving

    key_missing = not settings.webhook_public_key
    if key_missing and not insecure:
        Webhook(settings, insecure=False)  # raises the ConfigError that says what to do
    if settings.webhook_public_key:
        load_public_key(settings.webhook_public_key)
    for line in startup_warnings(settings, host, insecure and key_missing):
        log(line)
    if workers <= 1:
        server = make_server(settings, host, port, insecure=insecure, log=log)
        log(
            f"Listening on {server.url} (POST /events, /unsubscribe, /feedback); "
            f"database {settings.db}"
        )
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return
    Tracker(settings.db_url).close()  # create or migrate once, before the workers race to
    sock = serving.bind(host, port)
    where = sock.getsockname()
    log(
        f"Listening on http://{where[0]}:{where[1]} with {workers} worker processes "
        f"(POST /events, /unsubscribe, /feedback); database {settings.db}"
    )
    os.environ[WORKER_OPTIONS] = json.dumps(
        {"workdir": str(settings.workdir), "insecure": insecure}
    )
    serving.serve_workers("bulletin.web.webhook:worker_app", sock, workers)


def worker_app():
    """The app in one `--workers` process: settings from the working folder, log to stderr."""
    import sys

    from bulletin.config import load_settings

    options = json.loads(os.environ[WORKER_OPTIONS])
    pid = os.getpid()

    def log(line: str) -> None:
        sys.stderr.write(f"[{pid}] {line}\n")
        sys.stderr.flush()

    settings = load_settings(Path(options["workdir"]))
    return create_app(Webhook(settings, insecure=options["insecure"], log=log))
