"""The tracking database's old name: `Tracker` is the delivery ledger (bulletin/ledger/).

Kept so code written against `bulletin.tracking` keeps working; new code imports from
bulletin.ledger.store (the ledger) and bulletin.ledger.states (the states). This module loads
SQLAlchemy only when a Tracker is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bulletin.errors import DatabaseError
from bulletin.ledger.keys import email_hash, email_key, purged_text, utcnow
from bulletin.ledger.legacy import MIGRATIONS, SCHEMA_VERSION
from bulletin.ledger.states import FINAL as FINAL_STATES
from bulletin.ledger.states import State

if TYPE_CHECKING:
    from bulletin.ledger.store import Ledger

__all__ = [
    "FINAL_STATES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DatabaseError",
    "State",
    "Tracker",
    "email_hash",
    "email_key",
    "purged_text",
    "utcnow",
]


def Tracker(path: str | Path, *, timeout: float | None = None, secret: str | None = None) -> Ledger:
    """The ledger at `path` (a SQLite file or a postgresql:// URL), at the newest schema."""
    from bulletin.ledger.store import open_ledger

    return open_ledger(path, timeout=timeout, secret=secret)


def __getattr__(name: str):
    """`SendRow`, `Claimed`, `email_hash`, … load the ledger (and SQLAlchemy) when first used."""
    from bulletin.ledger import store

    if hasattr(store, name):
        return getattr(store, name)
    raise AttributeError(name)
