"""`bulletin events serve` under load it must shed, and input it must not choke on (issue 12,
findings 3, 5, 6 and 12; issue 14).

A real uvicorn server on 127.0.0.1 (in a thread, or `bulletin events serve --workers 2` as a
process), driven with raw sockets where the point is what a client does *not* send.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

import pytest
from reliability_harness import command, connect, integrity, wait_until
from servers import free_port

from bulletin.config import load_settings
from bulletin.events import import_events
from bulletin.tracking import Tracker
from bulletin.web import serving
from bulletin.web.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, make_server


def key_pair():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()


def signature(private, timestamp: str, body: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(
        private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()


class Hook:
    def __init__(self, server, private, log: list[str]) -> None:
        self.server, self.private, self.log = server, private, log
        self.address = tuple(server.server_address)

    def head(self, body: bytes, *, length: int | None = None, extra: str = "") -> bytes:
        """Request line and headers of a signed POST /events (the body is up to the caller)."""
        stamp = str(int(time.time()))
        return (
            f"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n"
            f"{SIGNATURE_HEADER}: {signature(self.private, stamp, body)}\r\n"
            f"{TIMESTAMP_HEADER}: {stamp}\r\n{extra}\r\n"
        ).encode()

    def post(self, events: list) -> tuple[int, dict | str]:
        body = json.dumps(events).encode()
        stamp = str(int(time.time()))
        request = Request(
            f"{self.server.url}/events",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(self.private, stamp, body),
                TIMESTAMP_HEADER: stamp,
            },
        )
        with urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())


def answer(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def hook(workdir, cli, sendgrid_env, monkeypatch):
    """The example letter sent (34 deliveries) and a signed webhook with a 1 s body deadline."""
    cli("send", "eu-referendum", "--yes")
    private, public = key_pair()
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", public)
    monkeypatch.setattr(serving, "HEADER_TIMEOUT", 1.0)
    log: list[str] = []
    server = make_server(load_settings(workdir), port=0, log=log.append, body_deadline=1.0)
    server.start()
    yield Hook(server, private, log)
    server.stop()


def delivered(db: Path, n: int = 1) -> list[dict]:
    with connect(db) as connection:
        rows = connection.execute("SELECT id, email FROM deliveries ORDER BY id LIMIT ?", (n,))
        return [
            {
                "event": "delivered",
                "email": r["email"],
                "timestamp": 1467360000,
                "sg_event_id": f"delivered-{r['id']}",
                "bulletin_send": "1",
                "bulletin_delivery": str(r["id"]),
            }
            for r in rows
        ]


def event_count(db: Path) -> int:
    with connect(db) as connection:
        return connection.execute("SELECT COUNT(*) FROM events").fetchone()[0]


# --- finding 3: exhaustion before authentication ---------------------------------------------


def test_a_slow_body_is_cut_off_and_does_not_hold_the_server(hook, db_path):
    body = json.dumps(delivered(db_path, 3)).encode()
    slow = socket.create_connection(hook.address, timeout=10)
    slow.sendall(hook.head(body))
    stop = threading.Event()

    def trickle() -> None:  # a byte at a time, each well inside any per-read time-out
        for byte in body:
            if stop.wait(0.2):
                return
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                return

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        # Meanwhile the server answers others at once.
        assert hook.post(delivered(db_path, 1))[0] == 200
        reply = answer(slow)  # the deadline is for the whole body, not for each read
    finally:
        stop.set()
        slow.close()
        feeder.join(timeout=5)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert event_count(db_path) == 1  # only the quick post's event
    assert any("did not arrive in time" in line for line in hook.log)


def test_a_connection_that_never_finishes_its_headers_is_closed(hook):
    with socket.create_connection(hook.address, timeout=10) as sock:
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and then nothing
        assert sock.recv(100) == b""  # closed by the server, with no answer


def test_100_concurrent_unsigned_posts_are_refused_without_reading_their_bodies(hook, db_path):
    head = (
        b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000000\r\n\r\n"
    )
    sockets = [socket.create_connection(hook.address, timeout=10) for _ in range(100)]
    try:
        for sock in sockets:
            sock.sendall(head)  # headers only: not one byte of the 5 MB body is ever sent

        with ThreadPoolExecutor(20) as pool:
            replies = list(pool.map(answer, sockets))
    finally:
        for sock in sockets:
            sock.close()
    assert {reply.split(b"\r\n", 1)[0] for reply in replies} == {b"HTTP/1.1 403 Forbidden"}
    assert all(b"connection: close" in reply.lower() for reply in replies)
    assert hook.post(delivered(db_path))[0] == 200  # and the server is still serving
    assert event_count(db_path) == 1


# --- finding 6: non-ASCII digits -------------------------------------------------------------


@pytest.mark.parametrize("where", ["content-length", "timestamp"])
def test_non_ascii_digits_are_refused_not_a_500(hook, db_path, where):
    body = json.dumps(delivered(db_path)).encode()
    if where == "content-length":
        head = hook.head(body).replace(
            f"Content-Length: {len(body)}".encode(), "Content-Length: ²".encode()
        )
    else:
        stamp = str(int(time.time()))
        head = (
            f"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"{SIGNATURE_HEADER}: {signature(hook.private, stamp, body)}\r\n"
            f"{TIMESTAMP_HEADER}: {stamp[:-1]}²\r\n\r\n"
        ).encode()
    with socket.create_connection(hook.address, timeout=10) as sock:
        sock.sendall(head + body)
        status = answer(sock).split(b"\r\n", 1)[0]
    assert status in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 403 Forbidden"), status
    assert event_count(db_path) == 0
    assert hook.post(delivered(db_path))[0] == 200


# --- finding 5 (server half): one bad event does not lose the post ---------------------------


def test_a_post_with_one_unstorable_event_saves_the_others(hook, db_path):
    good = delivered(db_path, 3)
    bad = dict(good[0], sg_event_id="bad-1", email="a\udc80@example.org", bulletin_delivery="9")
    body = json.dumps([good[0], bad, *good[1:]])  # \udc80 travels escaped, as JSON allows
    stamp = str(int(time.time()))
    raw = body.encode()
    request = Request(
        f"{hook.server.url}/events",
        data=raw,
        method="POST",
        headers={SIGNATURE_HEADER: signature(hook.private, stamp, raw), TIMESTAMP_HEADER: stamp},
    )
    with urlopen(request, timeout=10) as response:
        status, tally = response.status, json.loads(response.read())
    assert status == 200
    assert (tally["applied"], tally["malformed"]) == (3, 1)
    assert event_count(db_path) == 3
    assert integrity(db_path) == "ok"


# --- finding 12 (server half): nothing raw reaches the terminal -------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"/%1b[2J%1b[31mred%07",  # decoded by the server: ESC [2J clears a terminal
        b"/unsubscribe%0d%0aForged:%20line%7f",
        b"/\x1b[2J",  # raw: the HTTP parser refuses it (400) before any app sees it
    ],
)
def test_log_lines_escape_control_characters(hook, target):
    with socket.create_connection(hook.address, timeout=10) as sock:
        sock.sendall(
            b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        assert answer(sock).startswith((b"HTTP/1.1 404 ", b"HTTP/1.1 400 "))
    with socket.create_connection(hook.address, timeout=10) as sock:
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer(sock)
    wait_until(lambda: any("/after" in line for line in hook.log), "the log line of /after")
    for line in hook.log:
        assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
    if b"%" in target:
        assert any("\\x1b" in line or "\\x0d" in line for line in hook.log), hook.log


# --- issue 14: two worker processes, one database ----------------------------------------------


def snapshot(db: Path) -> tuple:
    with connect(db) as connection:
        return (
            connection.execute(
                "SELECT id, state, opened, clicked, first_opened_at, last_clicked_at "
                "FROM deliveries ORDER BY id"
            ).fetchall(),
            connection.execute("SELECT sg_event_id FROM events ORDER BY 1").fetchall(),
            connection.execute("SELECT email_hash FROM suppressions ORDER BY 1").fetchall(),
        )


def test_two_worker_processes_apply_one_sends_events_once(workdir, cli, sendgrid_env, db_path):
    cli("send", "eu-referendum", "--yes")
    with connect(db_path) as connection:
        rows = connection.execute("SELECT id, email FROM deliveries ORDER BY id").fetchall()
    kinds = ["processed", "delivered", "open", "click", "open", "deferred"]
    events = [
        {
            "event": kind,
            "email": r["email"],
            "timestamp": 1467360000 + 60 * n + r["id"],
            "sg_event_id": f"w-{r['id']}-{n}",
            "bulletin_send": "1",
            "bulletin_delivery": str(r["id"]),
            **({"type": "bounce", "reason": "550 no such user"} if kind == "bounce" else {}),
        }
        for r in rows
        for n, kind in enumerate(kinds + (["bounce"] if r["id"] % 10 == 0 else []))
    ]
    batches = [events[i : i + 10] for i in range(0, len(events), 10)]
    reference = workdir / "reference.db"
    with sqlite3.connect(db_path) as source, sqlite3.connect(reference) as target:
        source.backup(target)
    (workdir / "events.json").write_text(json.dumps(events))
    with Tracker(reference) as tracker:
        import_events(tracker, workdir / "events.json")

    port = free_port()
    log = (workdir / "serve.log").open("w")
    server = subprocess.Popen(
        command("events", "serve", "--insecure", "--workers", "2", "--port", str(port)),
        cwd=workdir,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"

    def post(batch: list[dict]) -> int:
        request = Request(f"{url}/events", data=json.dumps(batch).encode(), method="POST")
        with urlopen(request, timeout=30) as response:
            return response.status

    def up() -> bool:
        try:
            urlopen(f"{url}/nothing", timeout=5)
        except URLError as error:
            return getattr(error, "code", None) == 404
        except OSError:  # not accepting yet: the workers are still starting
            return False
        return False

    try:
        wait_until(up, "two workers to listen", timeout=60)
        with ThreadPoolExecutor(8) as pool:  # every batch twice, at once: SendGrid's retries
            statuses = list(pool.map(post, batches + batches[::-1]))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    assert set(statuses) == {200}
    assert server.returncode == 0, (workdir / "serve.log").read_text()
    assert snapshot(db_path) == snapshot(reference)
    assert integrity(db_path) == "ok"
    with sqlite3.connect(db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    pids = {
        line.split("]", 1)[0]
        for line in (workdir / "serve.log").read_text().splitlines()
        if line.startswith("[")
    }
    assert pids, "no worker logged a request"
