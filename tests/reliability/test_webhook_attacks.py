"""The Event Webhook and unsubscribe pages under attack (`bulletin events serve`).

A real server on 127.0.0.1 with a real ECDSA P-256 key pair: forged, altered, unsigned and
stale (replayed) posts are refused with 403 and change nothing; a replay inside the time window
changes nothing either (events are de-duplicated by id); oversized bodies get 413, deeply nested
JSON and wrong types get 400 or are counted as malformed — never a 500 (which SendGrid would
retry for three days) and never a dead server. Forged unsubscribe tokens suppress nobody.
"""

from __future__ import annotations

import base64
import json
import time
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from reliability_harness import connect, integrity

from bulletin.config import load_settings
from bulletin.unsubscribe import make_token
from bulletin.web.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, make_server


def key_pair():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()


def sign(private, timestamp: str, body: bytes) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return base64.b64encode(
        private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()


class Webhook:
    def __init__(self, url: str, private) -> None:
        self.url, self.private = url, private

    def post(self, body: bytes, *, signer=None, timestamp=None, headers=None, signed_body=None):
        """(status, text) of POST /events, signed by `signer` (default: SendGrid's key)."""
        timestamp = timestamp or str(int(time.time()))
        signed = {
            SIGNATURE_HEADER: sign(signer or self.private, timestamp, signed_body or body),
            TIMESTAMP_HEADER: timestamp,
        }
        request = Request(
            f"{self.url}/events",
            data=body,
            headers={"Content-Type": "application/json", **signed, **(headers or {})},
            method="POST",
        )
        try:
            with urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except HTTPError as error:
            return error.code, error.read().decode()


@pytest.fixture
def webhook(workdir, cli, sendgrid_env, monkeypatch):
    """Two sends' worth of deliveries, and the server verifying with a fresh key."""
    cli("send", "eu-referendum", "--yes")
    private, public = key_pair()
    monkeypatch.setenv("SENDGRID_WEBHOOK_PUBLIC_KEY", public)
    server = make_server(load_settings(workdir), port=0)
    server.start()
    yield Webhook(server.url, private)
    server.shutdown()
    server.server_close()
    server.app.close()


def delivered(db, n: int = 1) -> list[dict]:
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


def snapshot(db) -> tuple:
    with connect(db) as connection:
        return (
            connection.execute("SELECT id, state, error FROM deliveries ORDER BY id").fetchall(),
            connection.execute("SELECT COUNT(*) FROM events").fetchone()[0],
            connection.execute("SELECT COUNT(*) FROM suppressions").fetchone()[0],
        )


def test_forged_altered_unsigned_and_stale_posts_change_nothing(webhook, db_path):
    body = json.dumps(delivered(db_path)).encode()
    before = snapshot(db_path)
    other, _ = key_pair()
    stale = str(int(time.time()) - 3600)
    attempts = {
        "another key": webhook.post(body, signer=other),
        "altered body": webhook.post(body.replace(b"delivered", b"bounce"), signed_body=body),
        "stale timestamp": webhook.post(body, timestamp=stale),
        "future timestamp": webhook.post(body, timestamp=str(int(time.time()) + 3600)),
        "not a timestamp": webhook.post(body, timestamp="1e9"),
        "garbage signature": webhook.post(body, headers={SIGNATURE_HEADER: "bm90IGEgc2ln"}),
    }
    unsigned = Request(f"{webhook.url}/events", data=body, method="POST")
    try:
        urlopen(unsigned, timeout=30)
    except HTTPError as error:
        attempts["unsigned"] = (error.code, "")
    assert {what: code for what, (code, _) in attempts.items()} == dict.fromkeys(attempts, 403)
    assert snapshot(db_path) == before


def test_a_replayed_signed_post_is_applied_once(webhook, db_path):
    body = json.dumps(delivered(db_path, 3)).encode()
    timestamp = str(int(time.time()))
    assert webhook.post(body, timestamp=timestamp)[0] == 200
    after_first = snapshot(db_path)
    assert [r["state"] for r in after_first[0][:3]] == ["delivered"] * 3
    assert webhook.post(body, timestamp=timestamp)[0] == 200  # within the window: a retry
    assert snapshot(db_path) == after_first


HOSTILE_BODIES = {
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "nested objects": b'[{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]",
    "not JSON": b"\xff\xfe{not json",
    "an object": b'{"event": "delivered"}',
    "a number": b"42",
    "empty": b"",
}
WRONG_TYPES = [
    42,
    "delivered",
    None,
    [],
    {"event": 5},
    {"event": ["delivered"]},
    {"event": "delivered", "timestamp": "yesterday", "bulletin_delivery": "1; DROP TABLE"},
    {"event": "delivered", "timestamp": 1e308, "bulletin_delivery": 1},
    {"event": "delivered", "timestamp": 10**30, "bulletin_delivery": 1},
    {"event": "delivered", "timestamp": -(10**20), "bulletin_delivery": 2},
    {"event": "delivered", "bulletin_delivery": 10**30, "bulletin_send": 10**30},
    {"event": "bounce", "email": ["a@example.org"], "reason": {"x": 1}, "bulletin_delivery": 3},
    {"event": "bounce", "email": "x" * 100_000, "reason": "r" * 1_000_000},
    {"event": "open", "sg_event_id": {"id": 1}, "bulletin_delivery": 4},
    {"event": "click", "url": "javascript:alert(1)", "bulletin_delivery": "4"},
    {"event": "delivered", "bulletin_delivery": "5", "bulletin_send": "1", "email": 7},
]


@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_are_refused_without_a_500(webhook, db_path, name):
    before = snapshot(db_path)
    status, _ = webhook.post(HOSTILE_BODIES[name])
    assert status == 400, (name, status)
    assert snapshot(db_path) == before
    assert webhook.post(json.dumps(delivered(db_path)).encode())[0] == 200  # still serving


@pytest.mark.parametrize("item", WRONG_TYPES, ids=lambda item: json.dumps(item)[:40])
def test_events_of_the_wrong_shape_never_make_a_500(webhook, db_path, item):
    status, _ = webhook.post(json.dumps([item, *delivered(db_path)]).encode())
    assert status in (200, 400), status
    assert integrity(db_path) == "ok"
    assert webhook.post(json.dumps(delivered(db_path, 2)).encode())[0] == 200  # still serving


def test_an_oversized_post_is_refused_and_the_server_carries_on(webhook, db_path):
    huge = json.dumps([{"event": "open", "pad": "x" * (6 * 1024 * 1024)}]).encode()
    assert webhook.post(huge)[0] == 413
    assert webhook.post(json.dumps(delivered(db_path)).encode())[0] == 200


def test_forged_unsubscribe_tokens_suppress_nobody(webhook, workdir, db_path):
    before = snapshot(db_path)
    with connect(db_path) as connection:
        first, second = connection.execute("SELECT id, email FROM deliveries LIMIT 2").fetchall()
    secret = load_settings(workdir).secret
    good = make_token(secret, 1, first["id"], first["email"])
    forged = [
        make_token("a-guessed-secret", 1, first["id"], first["email"]),
        make_token(secret, 1, first["id"], second["email"]),  # someone else's address
        good.replace(f"1.{first['id']}.", f"1.{second['id']}.", 1),  # another delivery
        good.replace("1.", "2.", 1),  # another send
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        "",
        "1.1." + "A" * 22,
    ]
    for token in forged:
        request = Request(f"{webhook.url}/unsubscribe?t={token}", data=b"", method="POST")
        try:
            urlopen(request, timeout=30)
            raise AssertionError(f"forged token {token!r} was accepted")
        except HTTPError as error:
            assert error.code == 400
    assert snapshot(db_path) == before
    request = Request(f"{webhook.url}/unsubscribe?t={good}", data=b"", method="POST")
    assert urlopen(request, timeout=30).status == 200
    assert urlopen(request, timeout=30).status == 200  # a replayed click: still one suppression
    assert snapshot(db_path)[2] == before[2] + 1
