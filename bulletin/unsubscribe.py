"""Signed one-click unsubscribe links (RFC 8058).

A token names a send and a delivery and carries an HMAC-SHA256 over both and the recipient's
address, keyed with BULLETIN_SECRET: it holds no secret and no address, and it cannot be
forged, altered or reused for another address.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable

from bulletin.signing import delivery_signature, delivery_signer

_TOKEN = re.compile(r"^(\d{1,12})\.(\d{1,15})\.([A-Za-z0-9_-]{22})$")


def _signature(secret: str, send_id: int, delivery_id: int, email: str) -> str:
    return delivery_signature("unsubscribe", secret, send_id, delivery_id, email)


def make_token(secret: str, send_id: int, delivery_id: int, email: str) -> str:
    return f"{send_id}.{delivery_id}.{_signature(secret, send_id, delivery_id, email)}"


def link_maker(secret: str, public_url: str, send_id: int) -> Callable[[int, str], str]:
    """`link(delivery_id, email)`: unsubscribe_url(public_url, make_token(…)) for one send, made
    once a batch: 100,000 links a send."""
    sign = delivery_signer("unsubscribe", secret, send_id)
    prefix = unsubscribe_url(public_url, f"{send_id}.")

    def link(delivery_id: int, email: str) -> str:
        return f"{prefix}{delivery_id}.{sign(delivery_id, email)}"

    return link


def parse_token(token: str) -> tuple[int, int, str] | None:
    """(send id, delivery id, signature) if the token is well-formed, else None."""
    match = _TOKEN.match(token or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3)


def verify_token(secret: str, token: str, email: str) -> bool:
    """True if `token` was made with `secret` for this delivery and this address."""
    parsed = parse_token(token)
    if parsed is None or not secret:
        return False
    send_id, delivery_id, signature = parsed
    expected = _signature(secret, send_id, delivery_id, email)
    return hmac.compare_digest(expected, signature)


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe?t={token}"
