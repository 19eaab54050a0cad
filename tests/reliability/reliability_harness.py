"""Shared helpers for the reliability suite: a big contact list, real `bulletin` processes and
the ledger check every fault scenario ends with.

The ledger check compares two independent records of one send: what the loopback server says
it received (its own log) and what the tracking database says happened. They must agree:
nobody received two copies, nobody outside the audience received anything, everyone in the
audience has a row, and a row's state is consistent with what the server saw.
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

BATCH = 1000  # SendGrid personalizations per request
ROWS = 2100  # three requests: 1,000 + 1,000 + 100
TIMEOUT = 60  # seconds any one bulletin process may take before a test fails

# What the server may have seen for a row in each state.
RECEIVED_EXACTLY_ONCE = frozenset({"accepted"})
NEVER_RECEIVED = frozenset({"pending", "failed", "dropped"})
EITHER = frozenset({"unknown", "sending"})  # the answer was lost: it may or may not have gone


def address(n: int) -> str:
    return f"volunteer{n:04d}@example.org"


def contacts_csv(rows: int = ROWS) -> str:
    """A contact list of `rows` fictional volunteers, in batch order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["email", "first_name", "last_name", "ward"])
    for n in range(rows):
        writer.writerow([address(n), f"Volunteer{n}", "Example", "Penge and Cator"])
    return out.getvalue()


def use_contacts(workdir: Path, text: str) -> set[str]:
    """Replace the sample list with `text`; returns the (lower-case) audience."""
    for old in (workdir / "contacts").glob("*.csv"):
        old.unlink()
    (workdir / "contacts" / "volunteers.csv").write_text(text, encoding="utf-8")
    return {row["email"].lower() for row in csv.DictReader(io.StringIO(text))}


def batch_of(email: str) -> int:
    """1-based request number that carries this volunteer when nothing is retried."""
    return int(email.split("@")[0].removeprefix("volunteer")) // BATCH + 1


# --- processes ---------------------------------------------------------------------------


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulletin", *args]


def start(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`bulletin ARGS` as a real process in `workdir`, with the test's environment."""
    return subprocess.Popen(
        command(*args),
        cwd=workdir,
        env=dict(os.environ) if env is None else env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(workdir: Path, *args: str, env: dict[str, str] | None = None, **kwargs):
    """Run `bulletin ARGS` to the end; returns the CompletedProcess."""
    return subprocess.run(
        command(*args),
        cwd=workdir,
        env=dict(os.environ) if env is None else env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kwargs,
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.003)


# --- the database, read directly ---------------------------------------------------------


def connect(db: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(db, timeout=10)
    connection.row_factory = sqlite3.Row
    return connection


def states(db: Path, send_id: int | None = None) -> dict[str, str]:
    """email_key → state for one send (default: the latest)."""
    if not db.exists():
        return {}
    with connect(db) as connection:
        if send_id is None:
            send_id = connection.execute("SELECT MAX(id) FROM sends").fetchone()[0]
        rows = connection.execute(
            "SELECT email_key, state FROM deliveries WHERE send_id = ?", (send_id,)
        )
        return {r["email_key"]: r["state"] for r in rows}


def state_counts(db: Path, send_id: int | None = None) -> dict[str, int]:
    return dict(Counter(states(db, send_id).values()))


def integrity(db: Path) -> str:
    with sqlite3.connect(db, timeout=10) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def raw_bytes(db: Path) -> bytes:
    """The database file and its WAL, as they lie on disk."""
    return b"".join(
        p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-journal")) if p.exists()
    )


# --- the ledger ----------------------------------------------------------------------------


def assert_ledger(
    received: Counter[str],
    rows: dict[str, str],
    audience: Iterable[str],
    *,
    allowed: Iterable[str] = ("accepted", "failed", "unknown", "pending", "dropped"),
) -> None:
    """The server's log and the tracking database tell one consistent story."""
    audience = set(audience)
    twice = sorted(a for a, n in received.items() if n > 1)
    assert not twice, f"{len(twice)} address(es) received more than one copy: {twice[:5]}"
    strangers = sorted(set(received) - audience)
    assert not strangers, f"mail went to addresses outside the audience: {strangers[:5]}"
    missing = sorted(audience - set(rows))
    assert not missing, f"{len(missing)} address(es) have no delivery row: {missing[:5]}"
    unexpected = Counter(s for s in rows.values() if s not in set(allowed))
    assert not unexpected, f"unexpected states {dict(unexpected)}"
    for email, state in rows.items():
        if state in RECEIVED_EXACTLY_ONCE:
            assert received[email] == 1, f"{email} is {state} but the server never got it"
        elif state in NEVER_RECEIVED:
            assert received[email] == 0, f"{email} is {state} but the server got a copy"
        # unknown / sending: the answer was lost, so either is consistent
