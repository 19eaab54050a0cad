"""How the ledger keys people and times; no database code, so anything may import it."""

from __future__ import annotations

import hashlib
from contextlib import suppress
from datetime import UTC, datetime

from bulletin.signing import hmac_sha256

FORGET_REASON = "forgotten (data-protection request)"
FORGET_SOURCE = "forget"  # suppressions made by `bulletin forget`
UNSUBSCRIBE_SOURCE = "unsubscribe"  # … by a recipient's signed link


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def email_key(email: str) -> str:
    """An address as contacts store it: lower case, an international domain in ASCII (xn--…)."""
    key = email.strip().lower()
    local, at, domain = key.rpartition("@")
    if at and not domain.isascii():
        import idna

        with suppress(idna.IDNAError, UnicodeError):
            key = f"{local}@{idna.encode(domain, uts46=True).decode('ascii')}"
    return key


def email_hash(email: str) -> str:
    """Suppressions are keyed by a hash so `forget` can drop the address and keep the block."""
    return hashlib.sha256(email_key(email).encode()).hexdigest()


KEYED_PREFIX = "k1:"  # HMAC-SHA256 under BULLETIN_SECRET; a plain hash is 64 hex digits alone


def keyed_hash(email: str, secret: str) -> str:
    """What `forget` keeps when a secret is set: no one without BULLETIN_SECRET can test an
    address against it (issue 12), unlike a plain SHA-256 of a guessable address."""
    return KEYED_PREFIX + hmac_sha256(secret, email_key(email).encode()).hex()


def email_hashes(email: str, secret: str | None = None) -> set[str]:
    """Every digest under which a suppression of `email` may be stored: plain, and keyed."""
    plain = email_hash(email)
    return {plain, keyed_hash(email, secret)} if secret else {plain}


def purged_text(send_id: int) -> str:
    return (
        f"send #{send_id} was purged: who received it is no longer recorded, so it "
        "cannot be resumed without mailing everyone again; pass --new-send to do that"
    )
