"""`bulletin events serve`: a real server on 127.0.0.1, driven with `requests`.

Posts are signed the way SendGrid signs them (ECDSA P-256 / SHA-256 over the timestamp header
followed by the raw body) with a key pair generated for the test. Tests that record events run
on SQLite and on PostgreSQL (the `backend` fixture).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sqlite3  # only to lock a SQLite file from outside
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from backends import Backend, as_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from servers import free_port, slow

from bulletin.config import load_settings
from bulletin.errors import ConfigError
from bulletin.web.serving import WebServer
from bulletin.web.webhook import (
    MAX_BODY,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    make_server,
)

T0 = 1_719_820_800
SECRET = "webhook-test-secret-0123456789abcdef"


def key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def signed(private, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SIGNATURE_HEADER: base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: stamp,
        "Content-Type": "application/json",
    }


@dataclass
class Served:
    server: WebServer
    private: ec.EllipticCurvePrivateKey
    db: Backend
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, events: list[dict], **kwargs) -> requests.Response:
        body = json.dumps(events).encode()
        return requests.post(
            f"{self.url}/events",
            data=body,
            headers=signed(self.private, body),
            timeout=10,
            **kwargs,
        )

    def rows(self, sql: str, **params) -> list[tuple]:
        return self.db.tuples(sql, **params)


def start(workdir: Path, private, db: Backend, **options) -> Served:
    log: list[str] = []
    server = make_server(load_settings(workdir), "127.0.0.1", 0, log=log.append, **options)
    server.start()
    return Served(server, private, db, log)


@pytest.fixture
def keys(monkeypatch):
    private, public = key_pair()
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", public)
    monkeypatch.setenv("BULLETIN_SECRET", SECRET)
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", "https://bulletin.example.org")
    return private


@pytest.fixture
def served(backend, workdir, cli, keys):
    """The example letter sent to the outbox (34 deliveries), and a signed webhook server."""
    cli("send", "eu-referendum", "--yes")
    running = start(workdir, keys, backend)
    yield running
    running.server.shutdown()
    running.server.server_close()


def event(served: Served, delivery_id: int, kind: str, at: int = 0, **extra) -> dict:
    ((email, send_id),) = served.rows(
        "SELECT email, send_id FROM deliveries WHERE id = :id", id=delivery_id
    )
    return {
        "email": email,
        "timestamp": T0 + at,
        "event": kind,
        "sg_event_id": f"{kind}-{delivery_id}-{at}",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filterdrecv-p3mdw1-1.0",
        "bulletin_send": str(send_id),
        "bulletin_delivery": str(delivery_id),
        **extra,
    }


def states(served: Served) -> dict[int, str]:
    return dict(served.rows("SELECT id, state FROM deliveries"))


def event_count(served: Served) -> int:
    return served.rows("SELECT COUNT(*) FROM events")[0][0]


# --- signed posts --------------------------------------------------------------------------------


def test_a_signed_post_is_applied_and_answered_after_commit(served):
    batch = [
        event(served, 1, "delivered", 5),
        event(served, 2, "processed", 1),
        event(served, 3, "bounce", 9, type="bounce", reason="550 5.1.1 no such user"),
        {"email": "stranger@example.net", "event": "open", "sg_event_id": "s-1", "timestamp": T0},
    ]
    response = served.post(batch)
    assert response.status_code == 200
    assert response.json() == {
        "received": 4,
        "applied": 3,
        "duplicates": 0,
        "unknown": 1,
        "changed": 2,
        "suppressed": 1,
        "malformed": 0,
    }
    got = states(served)
    assert (got[1], got[2], got[3]) == ("delivered", "accepted", "bounced")
    assert event_count(served) == 4
    assert served.rows("SELECT reason, source FROM suppressions") == [
        ("hard bounce: 550 5.1.1 no such user", "sendgrid")
    ]


def test_a_replayed_post_is_accepted_but_changes_nothing(served):
    body = json.dumps([event(served, 1, "delivered", 5), event(served, 1, "open", 60)]).encode()
    headers = signed(served.private, body)
    first = requests.post(f"{served.url}/events", data=body, headers=headers, timeout=10)
    again = requests.post(f"{served.url}/events", data=body, headers=headers, timeout=10)
    assert first.json()["applied"] == 2
    assert again.status_code == 200
    assert (again.json()["applied"], again.json()["duplicates"]) == (0, 2)
    assert event_count(served) == 2


def test_out_of_order_posts_never_move_a_delivery_back(served):
    served.post([event(served, 1, "delivered", 30)])
    served.post(
        [event(served, 1, "deferred", 10, response="451 later"), event(served, 1, "processed", 1)]
    )
    assert states(served)[1] == "delivered"


@pytest.mark.parametrize(
    "tamper",
    [
        "body",
        "wrong key",
        "old timestamp",
        "future timestamp",
        "no signature",
        "no timestamp",
        "garbage signature",
    ],
)
def test_a_bad_signature_is_403_and_records_nothing(served, tamper):
    body = json.dumps([event(served, 1, "delivered", 5)]).encode()
    headers = signed(served.private, body)
    if tamper == "body":
        body = body.replace(b"delivered", b"bounce\x20\x20\x20")
    elif tamper == "wrong key":
        headers = signed(key_pair()[0], body)
    elif tamper == "old timestamp":
        headers = signed(served.private, body, int(time.time()) - 3600)
    elif tamper == "future timestamp":
        headers = signed(served.private, body, int(time.time()) + 3600)
    elif tamper == "no signature":
        del headers[SIGNATURE_HEADER]
    elif tamper == "no timestamp":
        del headers[TIMESTAMP_HEADER]
    else:
        headers[SIGNATURE_HEADER] = "not base64!"
    response = requests.post(f"{served.url}/events", data=body, headers=headers, timeout=10)
    assert response.status_code == 403
    assert event_count(served) == 0
    assert states(served)[1] == "accepted"
    assert any("refused" in line for line in served.log)


def test_signature_covers_the_raw_bytes_not_reserialised_json(served):
    # Same JSON, different bytes: a signature over one does not cover the other.
    raw = b'[ {"event":"delivered", "email":"x@example.org", "sg_event_id":"raw-1"} ]'
    headers = signed(served.private, raw)
    compact = json.dumps(json.loads(raw)).encode()
    refused = requests.post(f"{served.url}/events", data=compact, headers=headers, timeout=10)
    accepted = requests.post(f"{served.url}/events", data=raw, headers=headers, timeout=10)
    assert (refused.status_code, accepted.status_code) == (403, 200)


# --- bodies and methods --------------------------------------------------------------------------


def test_an_oversized_body_is_413_and_records_nothing(served):
    body = b"[" + b" " * MAX_BODY + b"]"
    response = requests.post(
        f"{served.url}/events", data=body, headers=signed(served.private, body), timeout=30
    )
    assert response.status_code == 413
    assert event_count(served) == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json at all", 400),
        (b'{"event": "delivered"}', 400),  # an object, not an array of events
        (b"\xff\xfe[]", 400),
        (b"[]", 200),
    ],
)
def test_bodies_that_are_not_an_array_of_events_are_400(served, body, status):
    response = requests.post(
        f"{served.url}/events", data=body, headers=signed(served.private, body), timeout=10
    )
    assert response.status_code == status
    assert event_count(served) == 0


def test_items_that_are_not_events_are_skipped_and_counted(served):
    response = served.post([event(served, 1, "delivered", 5), 42, {"email": "x@example.org"}])
    assert response.status_code == 200
    assert (response.json()["applied"], response.json()["malformed"]) == (1, 2)


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/events", 405, "POST"),
        ("PUT", "/events", 405, "POST"),
        ("DELETE", "/unsubscribe", 405, "GET, HEAD, POST"),
        ("GET", "/", 404, None),
        ("POST", "/events/", 404, None),
        ("GET", "/bulletin.db", 404, None),
        ("GET", "/unsubscribe/extra", 404, None),
    ],
)
def test_wrong_methods_and_paths(served, method, path, status, allow):
    response = requests.request(method, f"{served.url}{path}", timeout=10)
    assert response.status_code == status
    assert response.headers.get("Allow") == allow
    assert "Python" not in response.headers.get("Server", "")


def test_chunked_bodies_need_a_length(served):
    response = requests.post(f"{served.url}/events", data=iter([b"[", b"]"]), timeout=10)
    assert response.status_code == 411


def raw_request(served: Served, text: bytes) -> bytes:
    with socket.create_connection(served.server.server_address[:2], timeout=10) as sock:
        sock.sendall(text)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("length", [b"abc", b"-5", b"1e3"])
def test_a_bad_content_length_is_400(served, length):
    answer = raw_request(
        served,
        b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " + length + b"\r\n\r\n[]",
    )
    assert answer.startswith(b"HTTP/1.1 400 ")


def test_a_body_shorter_than_its_length_records_nothing(served):
    body = json.dumps([event(served, 1, "delivered")]).encode()
    head = (
        f"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body) + 50}\r\n"
        "Content-Type: application/json\r\n"
    )
    sign = "".join(
        f"{k}: {v}\r\n" for k, v in signed(served.private, body).items() if k != "Content-Type"
    )
    with socket.create_connection(served.server.server_address[:2], timeout=10) as sock:
        sock.sendall((head + sign + "\r\n").encode() + body)
        sock.shutdown(socket.SHUT_WR)  # the client gives up mid-body
        assert sock.recv(100) == b""
    assert event_count(served) == 0


def test_keep_alive_connection_serves_several_posts(served):
    with requests.Session() as session:
        for n in range(1, 4):
            body = json.dumps([event(served, n, "delivered", 5)]).encode()
            response = session.post(
                f"{served.url}/events", data=body, headers=signed(served.private, body), timeout=10
            )
            assert response.status_code == 200
    assert event_count(served) == 3


def test_a_locked_database_is_503_then_the_retry_succeeds(workdir, cli, keys):
    """SQLite only: a whole-file lock taken from outside (PostgreSQL locks rows, not files)."""
    cli("send", "eu-referendum", "--yes")
    running = start(workdir, keys, as_backend(workdir / "bulletin.db"), db_timeout=0.2)
    try:
        batch = [event(running, 1, "delivered", 5)]
        blocker = sqlite3.connect(workdir / "bulletin.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        busy = running.post(batch)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "60"
        assert event_count(running) == 0
        retry = running.post(batch)  # what SendGrid does with a non-2xx answer
        assert retry.status_code == 200 and retry.json()["applied"] == 1
    finally:
        running.server.shutdown()
        running.server.server_close()


def test_posts_are_recorded_while_a_send_runs_in_another_process(
    backend, workdir, cli, keys, sendgrid_env
):
    cli("send", "eu-referendum", "--yes")
    contacts = workdir / "lists" / "people.csv"
    contacts.parent.mkdir()
    contacts.write_text(
        "email,first_name,ward\n"
        + "".join(f"person{n:05d}@example.org,Person{n},Penge and Cator\n" for n in range(2500))
    )
    (workdir / "messages" / "street.md").write_text(
        "---\nsubject: Street safety\nfrom: Bromley Police <bromley@example.org>\n"
        "contacts: [lists/people.csv]\npublic: false\n---\n"
        "Dear {{ first_name }}, please report hate crime.\n"
    )
    sendgrid_env.script(slow(0.4), slow(0.4), slow(0.4))
    running = start(workdir, keys, backend)
    try:
        sending = subprocess.Popen(
            [sys.executable, "-m", "bulletin", "send", "street", "--yes"],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        answers, n = [], 0
        while sending.poll() is None and n < 500:
            n += 1
            answers.append(running.post([event(running, 1 + n % 34, "open", n)]).status_code)
        out, err = sending.communicate(timeout=60)
    finally:
        running.server.shutdown()
        running.server.server_close()
    assert sending.returncode == 0, err
    assert "2500 accepted" in out
    assert len(answers) >= 3 and set(answers) == {200}
    assert event_count(running) == len(answers)


# --- start-up ------------------------------------------------------------------------------------


def test_without_a_key_the_server_refuses_to_start(workdir, monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", SECRET)
    with pytest.raises(ConfigError, match="SENDGRID_WEBHOOK_PUBLIC_KEY is not set"):
        make_server(load_settings(workdir), "127.0.0.1", 0)


def test_a_key_that_is_not_sendgrids_is_a_config_error(workdir, monkeypatch):
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", "bm90IGEga2V5")
    with pytest.raises(ConfigError, match="not a valid public key"):
        make_server(load_settings(workdir), "127.0.0.1", 0)


def run_cli(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bulletin", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_cli_refuses_to_serve_without_a_key(workdir):
    process = run_cli(workdir, "events", "serve", "--port", str(free_port()))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.startswith("Error: SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
    assert "--insecure" in err and len(err.strip().splitlines()) == 1


def test_cli_insecure_serves_unsigned_posts_and_says_so_loudly(workdir, cli, monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", SECRET)
    cli("send", "eu-referendum", "--yes")
    port = free_port()
    process = run_cli(workdir, "events", "serve", "--insecure", "--port", str(port))
    try:
        lines = []
        while not any(line.startswith("Listening on") for line in lines):
            line = process.stderr.readline()
            assert line, f"server exited early: {lines}"
            lines.append(line)
        assert lines[0].startswith("WARNING: --insecure: event posts are NOT verified")
        answer = requests.post(
            f"http://127.0.0.1:{port}/events",
            json=[
                {
                    "event": "delivered",
                    "email": "margaret.okafor@example.org",
                    "bulletin_send": "1",
                    "bulletin_delivery": "1",
                    "sg_event_id": "i-1",
                }
            ],
            timeout=10,
        )
        assert answer.status_code == 200 and answer.json()["applied"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 0
