"""The signing fast path gives exactly what the standard library's HMAC gives."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random

import pytest

from bulletin import feedback, unsubscribe
from bulletin.signing import delivery_signature, hmac_sha256

SECRET = "test-secret-for-signing-0123456789abcdef"


def reference(purpose: str, secret: str, send_id: int, delivery_id: int, email: str) -> str:
    """The code unsubscribe.py and feedback.py each held before (release 2)."""
    message = f"{purpose}:{send_id}:{delivery_id}:{email.strip().lower()}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@pytest.mark.parametrize(
    "secret",
    [
        SECRET,
        "x" * 64,  # exactly one block
        "y" * 65,  # longer than a block: hashed first
        "z" * 200,
        "clé-secrète-é" * 5,  # not ASCII
        "",
    ],
)
def test_hmac_agrees_with_the_standard_library(secret):
    rng = random.Random(secret)
    for length in (0, 1, 55, 56, 63, 64, 65, 200):
        message = bytes(rng.randrange(256) for _ in range(length))
        assert hmac_sha256(secret, message) == hmac.digest(secret.encode(), message, "sha256")
        assert hmac_sha256(secret, message) == hmac_sha256(secret, message)  # states reused


def test_signatures_agree_with_the_code_they_replace():
    rng = random.Random(1)
    for _ in range(2000):
        email = rng.choice([" Ann@Example.org ", "zoë@example.org", "b@example.net", ""])
        send_id, delivery_id = rng.randrange(10**12), rng.randrange(10**15)
        for purpose in ("unsubscribe", "feedback"):
            assert delivery_signature(purpose, SECRET, send_id, delivery_id, email) == reference(
                purpose, SECRET, send_id, delivery_id, email
            )
        # Signatures whose base64 holds + and / (URL-safe: - and _) come up in 2,000 draws.
    token = unsubscribe.make_token(SECRET, 7, 8, "ann@example.org")
    assert unsubscribe.verify_token(SECRET, token, "ANN@example.org ")
    assert not feedback.verify_token(SECRET, token, "ann@example.org")  # another purpose
    assert feedback.verify_token(
        SECRET, feedback.make_token(SECRET, 7, 8, "ann@example.org"), "ann@example.org"
    )


def test_keyed_suppression_hashes_are_unchanged():
    from bulletin.ledger.keys import email_key, keyed_hash

    for email in ("Ann@Example.org", " zoë@bücher.example ", "b@example.net"):
        expected = hmac.new(SECRET.encode(), email_key(email).encode(), hashlib.sha256).hexdigest()
        assert keyed_hash(email, SECRET) == "k1:" + expected


def test_a_batchs_links_are_the_links_made_one_at_a_time():
    """send.py signs a batch with link makers (made once a batch): the same links."""
    rng = random.Random(2)
    public = "https://bulletin.example.org/"
    for send_id in (1, 42, 10**12 - 1):
        unsubscribe_link = unsubscribe.link_maker(SECRET, public, send_id)
        feedback_link = feedback.link_maker(SECRET, public, send_id)
        for _ in range(300):
            email = rng.choice([" Ann@Example.org ", "zoë@example.org", "b@example.net", ""])
            delivery_id = rng.randrange(10**15)
            assert unsubscribe_link(delivery_id, email) == unsubscribe.unsubscribe_url(
                public, unsubscribe.make_token(SECRET, send_id, delivery_id, email)
            )
            assert feedback_link(delivery_id, email) == feedback.feedback_url(
                public, feedback.make_token(SECRET, send_id, delivery_id, email)
            )
            signature = reference("unsubscribe", SECRET, send_id, delivery_id, email)
            assert unsubscribe_link(delivery_id, email).endswith(f".{signature}")
