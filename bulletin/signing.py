"""The signature in a delivery's signed links (unsubscribe, "Was this useful?").

HMAC-SHA256 keyed with BULLETIN_SECRET over `PURPOSE:SEND:DELIVERY:ADDRESS`, cut to 16 bytes
and written as URL-safe base64 without padding (22 characters). The purpose keeps the links
apart: an unsubscribe token never answers feedback, nor the other way round.

A send signs two links per recipient, 200,000 for a borough-wide list. HMAC is
SHA-256(key ^ opad, SHA-256(key ^ ipad, message)) (RFC 2104); keying it costs more than
hashing a short message, so the two keyed SHA-256 states are made once per secret and copied
for each message: 0.75 µs a signature instead of 2.1 µs for `hmac.digest` (tests compare the
two on many keys and messages).
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Callable
from functools import lru_cache

_BLOCK = 64  # SHA-256's block size in bytes
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_URLSAFE = bytes.maketrans(b"+/", b"-_")


@lru_cache(maxsize=8)
def _keyed(secret: str):
    """SHA-256 states that have taken in `key ^ ipad` and `key ^ opad`."""
    key = secret.encode()
    if len(key) > _BLOCK:  # a long key is hashed first, as RFC 2104 says
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def hmac_sha256(secret: str, message: bytes) -> bytes:
    """hmac.digest(secret.encode(), message, "sha256"), from the states made once per secret."""
    inner, outer = _keyed(secret)
    inner = inner.copy()
    inner.update(message)
    outer = outer.copy()
    outer.update(inner.digest())
    return outer.digest()


def delivery_signature(
    purpose: str, secret: str, send_id: int, delivery_id: int, email: str
) -> str:
    return delivery_signer(purpose, secret, send_id)(delivery_id, email)


def delivery_signer(purpose: str, secret: str, send_id: int) -> Callable[[int, str], str]:
    """`sign(delivery_id, email)`: delivery_signature for one purpose, secret and send.

    For a batch: the inner state has already taken `PURPOSE:SEND:`, and each signature costs
    one call instead of five.
    """
    keyed_inner, outer = _keyed(secret)
    inner = keyed_inner.copy()
    inner.update(f"{purpose}:{send_id}:".encode())
    b2a, urlsafe = binascii.b2a_base64, _URLSAFE

    def sign(delivery_id: int, email: str) -> str:
        state = inner.copy()
        state.update(f"{delivery_id}:{email.strip().lower()}".encode())
        result = outer.copy()
        result.update(state.digest())
        # 16 bytes are 22 base64 characters and "==": the padding cut, as rstrip("=") did.
        return b2a(result.digest()[:16], newline=False)[:22].translate(urlsafe).decode("ascii")

    return sign
