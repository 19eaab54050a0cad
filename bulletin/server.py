"""`bulletin events serve`: SendGrid's Event Webhook and the one-click unsubscribe pages.

Standard library only (`http.server.ThreadingHTTPServer`): the traffic is a few posts a
minute plus the odd unsubscribe, every write goes through one SQLite connection anyway, and
TLS and the public name belong to the reverse proxy in front. No new dependency, nothing to
configure, and the whole attack surface is the three routes below:

- `POST /events`: a JSON array of SendGrid events, verified (ECDSA P-256 / SHA-256 over the
  timestamp header value followed by the raw body) when SENDGRID_WEBHOOK_PUBLIC_KEY is set.
  Answers 200 only after the batch is committed, so SendGrid retries anything we lost.
- `GET /unsubscribe?t=TOKEN`: a confirmation page with a button; changes nothing, so link
  scanners cannot unsubscribe anyone.
- `POST /unsubscribe?t=TOKEN`: RFC 8058 one-click (or the page's button): suppresses at once.

Everything else is 404. Tokens never reach the log.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from bulletin.config import Settings
from bulletin.errors import BulletinError, ConfigError
from bulletin.events import apply_events, parse_event, unsubscribe_by_link
from bulletin.tracking import Tracker
from bulletin.unsubscribe import parse_token, verify_token

MAX_BODY = 5 * 1024 * 1024  # SendGrid batches stay far below this
MAX_FORM = 64 * 1024
MAX_DRAIN = 64 * 1024 * 1024  # read and discard this much of an oversized body, then hang up
TOLERANCE = 600  # seconds a signed post's timestamp may differ from our clock
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
_QUERY = re.compile(r"\?[^\s'\"]*")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


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

    if not signature or not timestamp:
        return "missing signature headers"
    if not timestamp.isdigit() or len(timestamp) > 12:
        return "malformed timestamp"
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:
        return "timestamp outside the allowed window (replayed or clock skew)"
    try:
        der = base64.b64decode(signature.strip(), validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return "signature does not verify"
    return None


class App:
    """What the request threads share: settings, the tracker (behind a lock), the key."""

    def __init__(
        self,
        settings: Settings,
        *,
        insecure: bool = False,
        log: Callable[[str], None] = lambda line: None,
        tolerance: float = TOLERANCE,
        db_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
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
        self.tracker = Tracker(settings.db_path, timeout=db_timeout)
        self.closed = False

    def close(self) -> None:
        with self.lock:  # waits for a batch being committed
            if not self.closed:
                self.closed = True
                self.tracker.close()

    def delivery_for(self, token: str):
        """The delivery a well-signed token names, or None."""
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

    def _check_open(self) -> None:
        if self.closed:
            raise Unavailable("shutting down")


class Unavailable(Exception):
    """Answer 503: the database is busy or the server is stopping; try again later."""


class EventServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], app: App) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, _Handler)

    def server_close(self) -> None:
        super().server_close()
        self.app.close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"


def make_server(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8025,
    *,
    insecure: bool = False,
    log: Callable[[str], None] = lambda line: None,
    tolerance: float = TOLERANCE,
    db_timeout: float = 10.0,
) -> EventServer:
    """A bound, not yet serving, server; ConfigError if it must not or cannot start."""
    app = App(settings, insecure=insecure, log=log, tolerance=tolerance, db_timeout=db_timeout)
    try:
        return EventServer((host, port), app)
    except OSError as error:
        app.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({error.strerror or error}); is another "
            "`bulletin events serve` running? Pick another --port"
        ) from None


def startup_warnings(server: EventServer) -> list[str]:
    """What the operator must know before trusting this server."""
    app, host = server.app, str(server.server_address[0])
    lines = []
    if app.insecure:
        lines.append(
            "WARNING: --insecure: event posts are NOT verified. Anyone who can reach this port "
            "can fake delivery results and put addresses on the suppression list. Use it only "
            "for a local test; set SENDGRID_WEBHOOK_PUBLIC_KEY for real use."
        )
    if not app.settings.secret:
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


def serve(server: EventServer) -> None:
    """Serve until Ctrl-C or SIGTERM; a batch being committed is finished first."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        server.server_close()


# --- pages -----------------------------------------------------------------------------------

_STYLE = """
body{margin:0;background:#f3f4f6;color:#1f2937;font:1.125rem/1.6 system-ui,-apple-system,
"Segoe UI",Roboto,Arial,sans-serif}
main{max-width:34rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:8px;
border-top:6px solid #1d3a6e}
h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem;color:#1d3a6e}
p{margin:0 0 1rem}
form{margin:1.5rem 0 2rem}
button{font:inherit;font-weight:600;padding:.75rem 1.5rem;border:0;border-radius:6px;
background:#1d3a6e;color:#fff;cursor:pointer}
button:hover{background:#142a50}
button:focus-visible{outline:3px solid #f59e0b;outline-offset:3px}
.small{font-size:.95rem;color:#4b5563}
"""


def _page(title: str, body: str, sender: str) -> bytes:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="robots" content="noindex">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f'<main>\n<h1>{html.escape(title)}</h1>\n{body}\n<p class="small">{html.escape(sender)}</p>'
        "\n</main>\n</body>\n</html>\n"
    ).encode()


def _masked(email: str) -> str:
    """`ma…@example.org`: enough to recognise, not enough to harvest from a forwarded link."""
    local, _, domain = email.partition("@")
    return (local[:2] + "…" if len(local) > 2 else local) + "@" + domain


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


class _Handler(BaseHTTPRequestHandler):
    server: EventServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # per socket read: a stalled client cannot hold a thread for long

    # --- plumbing ---

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_OPTIONS(self) -> None:
        self._route("OPTIONS")

    def version_string(self) -> str:
        return "bulletin"

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass  # `_send` logs, without the query string (it holds unsubscribe tokens)

    def log_message(self, format: str, *args: Any) -> None:
        text = _QUERY.sub("?…", format % args)  # a malformed request line may hold a token
        self.server.app.log(f"{self.client_address[0]} {text}")

    def _route(self, method: str) -> None:
        self._consumed = False
        self._note = ""
        path, _, query = self.path.partition("?")
        try:
            if path == "/events":
                if method != "POST":
                    return self._refuse_method("POST")
                return self._events()
            if path == "/unsubscribe":
                if method in ("GET", "HEAD"):
                    return self._unsubscribe_page(query)
                if method == "POST":
                    return self._unsubscribe(query)
                return self._refuse_method("GET, HEAD, POST")
            self._text(HTTPStatus.NOT_FOUND, "Not found.")
        except TimeoutError:  # the body stalled: hang up, nothing was recorded
            self.close_connection = True
        except (Unavailable, BulletinError) as error:
            self._note = str(error)
            self._text(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "Temporarily unavailable; please try again in a minute.",
                {"Retry-After": "60"},
            )
        except ConnectionError:
            self.close_connection = True
        except Exception as error:  # a bug: answer 500 so SendGrid retries, and say what
            import traceback

            self.close_connection = True
            self._note = f"internal error: {error!r}"
            self.server.app.log(traceback.format_exc().rstrip())
            self._text(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error; please try again.")

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not self._consumed and self._has_body():
            self.close_connection = True  # an unread body would be taken for the next request
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        path = self.path.partition("?")[0]
        note = f" {self._note}" if self._note else ""
        self.server.app.log(
            f"{self.client_address[0]} {self.command} {path[:80]} {int(status)}{note}"
        )

    def _text(self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, (text + "\n").encode(), "text/plain; charset=utf-8", headers)

    def _json(self, status: HTTPStatus, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _html(self, status: HTTPStatus, page: bytes) -> None:
        self._send(status, page, "text/html; charset=utf-8")

    def _refuse_method(self, allow: str) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"Method not allowed.\n",
            "text/plain; charset=utf-8",
            {"Allow": allow},
        )

    def _has_body(self) -> bool:
        length = self.headers.get("Content-Length", "0").strip()
        return "Transfer-Encoding" in self.headers or length not in ("", "0")

    def _read_body(self, limit: int) -> bytes | None:
        """The request body, or None after answering 400/411/413 for a bad or large one."""
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True
            self._text(HTTPStatus.LENGTH_REQUIRED, "Send a Content-Length, not chunks.")
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            self._text(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required.")
            return None
        raw = raw.strip()
        if not raw.isdigit() or len(self.headers.get_all("Content-Length") or []) > 1:
            self.close_connection = True
            self._text(HTTPStatus.BAD_REQUEST, "Content-Length is not a number.")
            return None
        length = int(raw)
        if length > limit:
            self._note = f"body of {length:,} bytes"
            if length <= MAX_DRAIN:
                self._drain(length)  # so the client reads our answer, not a reset
            self.close_connection = True
            self._text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"The body is over {limit:,} bytes.")
            return None
        body = self.rfile.read(length)
        self._consumed = True
        if len(body) < length:
            self.close_connection = True
            raise ConnectionError("the client closed the connection mid-body")
        return body

    def _drain(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)
        self._consumed = True

    # --- POST /events ---

    def _events(self) -> None:
        app = self.server.app
        body = self._read_body(MAX_BODY)
        if body is None:
            return
        if app.key is not None:
            problem = check_signature(
                app.key,
                self.headers.get(SIGNATURE_HEADER),
                self.headers.get(TIMESTAMP_HEADER),
                body,
                tolerance=app.tolerance,
            )
            if problem:
                self._note = f"refused: {problem}"
                self._text(HTTPStatus.FORBIDDEN, "Forbidden: the signature does not verify.")
                return
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError included; deep nesting
            self._note = "not JSON"
            self._text(HTTPStatus.BAD_REQUEST, "The body is not JSON.")
            return
        if not isinstance(data, list):
            self._note = "not a JSON array"
            self._text(HTTPStatus.BAD_REQUEST, "Expected a JSON array of events.")
            return
        events, malformed = [], 0
        for item in data:
            try:
                events.append(parse_event(item))
            except ValueError:
                malformed += 1
        with app.lock:
            app._check_open()
            tally = apply_events(app.tracker, events)
        tally.malformed = malformed
        self._note = (
            f"{tally.received} event(s): {tally.applied} applied, {tally.duplicates} duplicate, "
            f"{tally.unknown} unknown delivery, {tally.suppressed} suppressed"
            + (f", {malformed} malformed" if malformed else "")
        )
        self._json(HTTPStatus.OK, tally.as_dict())

    # --- /unsubscribe ---

    def _sender(self) -> str:
        settings = self.server.app.settings
        return " · ".join(s for s in (settings.organisation, settings.unit) if s)

    def _bad_link(self) -> None:
        self._note = "bad token"
        page = _page(
            "This unsubscribe link is not valid",
            "<p>The link may have been cut short or changed. Please use the unsubscribe link in "
            "the most recent email you received from us, or reply to that email and ask us to "
            "stop.</p>",
            self._sender(),
        )
        self._html(HTTPStatus.BAD_REQUEST, page)

    def _delivery(self, token: str):
        app = self.server.app
        if not app.settings.secret:
            raise Unavailable("BULLETIN_SECRET is not set: unsubscribe links cannot be checked")
        return app.delivery_for(token)

    def _unsubscribe_page(self, query: str) -> None:
        token = (parse_qs(query).get("t") or [""])[0].strip()
        row = self._delivery(token)
        if row is None:
            return self._bad_link()
        app = self.server.app
        with app.lock:
            app._check_open()
            already = app.tracker.is_suppressed(row["email"])
        who = html.escape(_masked(row["email"]))
        if already:
            page = _page(
                "You are unsubscribed",
                f"<p>{who} is not on our mailing list any more. You do not need to do anything."
                "</p>",
                self._sender(),
            )
        else:
            safe = html.escape(token, quote=True)
            page = _page(
                "Unsubscribe from these emails?",
                f"<p>Press the button to stop emails from us to <strong>{who}</strong>.</p>\n"
                f'<form method="post" action="?t={safe}">\n'
                f'<input type="hidden" name="t" value="{safe}">\n'
                '<button type="submit">Unsubscribe</button>\n</form>',
                self._sender(),
            )
        self._html(HTTPStatus.OK, page)

    def _unsubscribe(self, query: str) -> None:
        body = self._read_body(MAX_FORM)
        if body is None:
            return
        token = (parse_qs(query).get("t") or [""])[0].strip()
        if not token:
            token = _form_token(self.headers.get("Content-Type", ""), body)
        row = self._delivery(token)
        if row is None:
            return self._bad_link()
        app = self.server.app
        with app.lock:
            app._check_open()
            added = unsubscribe_by_link(app.tracker, row["id"])
        self._note = f"delivery {row['id']} unsubscribed" + ("" if added else " (already)")
        page = _page(
            "You have been unsubscribed",
            f"<p>We will not email {html.escape(_masked(row['email']))} again. "
            "If this was a mistake, reply to any of our emails and we will put it right.</p>",
            self._sender(),
        )
        self._html(HTTPStatus.OK, page)
