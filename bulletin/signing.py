"""The signature in a delivery's signed links (unsubscribe, "Was this useful?").

HMAC-SHA256 keyed with BULLETIN_SECRET over `PURPOSE:SEND:DELIVERY:ADDRESS`, cut to 16 bytes
and written as URL-safe base64 without padding (22 characters). The purpose keeps the links
apart: an unsubscribe token never answers feedback, nor the other way round.
"""

from __future__ import annotations

import base64
import hmac
from functools import lru_cache


@lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    return secret.encode()


def delivery_signature(
    purpose: str, secret: str, send_id: int, delivery_id: int, email: str
) -> str:
    """Twice per recipient in a send: hmac.digest is OpenSSL's one-shot HMAC, no objects."""
    message = f"{purpose}:{send_id}:{delivery_id}:{email.strip().lower()}".encode()
    digest = hmac.digest(_key(secret), message, "sha256")[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")
