#!/usr/bin/env python3
"""Micro-benchmark for the ledger (issue 13): queue, claim and record 100,000 deliveries.

    python bench/ledger_insert.py [--recipients N] [--batch 1000] [--postgres URL]

One send of N recipients is queued (one `executemany`), then claimed in batches of 1,000 and
each batch's outcome recorded in the same transaction as the next claim (as today's send
does: one durable commit per batch), until nothing is pending. Scenarios:

- `today`: bulletin/tracking.py's Tracker, raw sqlite3 (INSERT OR IGNORE, SELECT then UPDATE
  per claimed row, one UPDATE per outcome row);
- `core …`: SQLAlchemy Core on the ledger's engine: the claim is one statement,
  `UPDATE … WHERE id IN (SELECT id … ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED)
  RETURNING …` (SQLite ignores FOR UPDATE; its BEGIN IMMEDIATE already serialises writers);
  the queue is ON CONFLICT DO NOTHING either as a plain executemany or with RETURNING id
  (SQLAlchemy's insertmanyvalues: multi-row VALUES, and the count of rows really added);
  outcomes are recorded per row (like today) or grouped, one UPDATE … WHERE id IN (…) per
  (state, message id) — a SendGrid batch shares one X-Message-Id.

PostgreSQL is a throw-away cluster started like the tests' (tests/postgres.py) with fsync ON,
unless --postgres names a server. Every scenario checks that each recipient was claimed
exactly once and ends `accepted`. Prints one Markdown table; seconds are wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sqlalchemy import Engine, bindparam, func, select, update  # noqa: E402
from sqlalchemy.dialects import postgresql, sqlite  # noqa: E402

from bulletin.ledger.engine import make_engine, transaction  # noqa: E402
from bulletin.ledger.migrate import upgrade  # noqa: E402
from bulletin.ledger.schema import deliveries, sends  # noqa: E402

NOW = "2026-11-29T10:00:00+00:00"


@dataclass(frozen=True)
class Contact:
    email: str
    first_name: str
    last_name: str
    ward: str

    def get(self, name: str) -> str:
        return getattr(self, name)


def contacts(n: int) -> list[Contact]:
    domains = ("example.org", "example.com", "example.net")
    return [
        Contact(f"person{i}@{domains[i % 3]}", f"First{i}", f"Last{i}", f"Ward {i % 20}")
        for i in range(n)
    ]


@dataclass
class Figures:
    name: str
    queue: float = 0.0
    claim_record: float = 0.0
    claimed: int = 0

    @property
    def total(self) -> float:
        return self.queue + self.claim_record


# --- today: tracking.py on raw sqlite3 ---------------------------------------------------


def run_today(folder: Path, people: list[Contact], batch: int) -> Figures:
    from bulletin.tracking import State, Tracker

    figures = Figures("today: tracking.py, raw sqlite3")
    with Tracker(folder / "today.db") as tracker:
        send_id = tracker.create_send(
            message="m",
            path="messages/m.md",
            subject="s",
            reference="",
            category="",
            content_hash="0" * 64,
            transport="sendgrid",
        )
        start = time.perf_counter()
        added = tracker.add_recipients(send_id, people)
        figures.queue = time.perf_counter() - start
        assert added == len(people)
        seen: set[int] = set()
        outcomes: list = []
        start = time.perf_counter()
        after = 0
        while True:
            claimed = tracker.claim(send_id, batch, after, record=outcomes)
            if not claimed:
                break
            after = claimed[-1].id
            seen.update(c.id for c in claimed)
            figures.claimed += len(claimed)
            message_id = f"msg-{after}"
            outcomes = [(c.id, State.ACCEPTED.value, message_id, None) for c in claimed]
        figures.claim_record = time.perf_counter() - start
        assert len(seen) == figures.claimed == len(people)
        assert tracker.counts(send_id)["accepted"] == len(people)
    return figures


# --- the ledger's statements on SQLAlchemy Core -------------------------------------------


def queue_statement(engine: Engine, returning: bool):
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(deliveries).on_conflict_do_nothing(
        index_elements=["send_id", "email_key"]
    )
    return statement.returning(deliveries.c.id) if returning else statement


def claim_statement(batch: int):
    """Up to `batch` pending rows above `after` to `sending` at once; rows another claimer
    holds are skipped. The `id > after` cursor keeps each claim O(batch): without it both
    back ends walk past every row already claimed. A claimer that finds nothing runs once more
    from 0 to pick up rows a crashed claimer's rolled-back transaction left pending.

    The picked ids are a CTE joined by primary key (UPDATE … FROM): PostgreSQL plans
    `WHERE id IN (SELECT … LIMIT)` as a hash join over the whole table.
    """
    picked = (
        select(deliveries.c.id)
        .where(
            deliveries.c.send_id == bindparam("claim_send"),
            deliveries.c.state == "pending",
            deliveries.c.id > bindparam("after"),
        )
        .order_by(deliveries.c.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    return (
        update(deliveries)
        .where(deliveries.c.id == picked.c.id)
        .values(state="sending", updated_at=bindparam("at"))
        .returning(deliveries.c.id, deliveries.c.email, deliveries.c.email_key)
    )


RECORD_ROW = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("delivery_id"), deliveries.c.state == "sending")
    .values(
        state=bindparam("new_state"),
        message_id=func.coalesce(bindparam("new_message_id"), deliveries.c.message_id),
        error=bindparam("new_error"),
        updated_at=bindparam("at"),
    )
)

RECORD_GROUP = (
    update(deliveries)
    .where(deliveries.c.id.in_(bindparam("ids", expanding=True)), deliveries.c.state == "sending")
    .values(
        state=bindparam("new_state"),
        message_id=func.coalesce(bindparam("new_message_id"), deliveries.c.message_id),
        error=bindparam("new_error"),
        updated_at=bindparam("at"),
    )
)


def record(connection, outcomes: list[tuple[int, str, str | None, str | None]], grouped: bool):
    if not outcomes:
        return
    if not grouped:
        connection.execute(
            RECORD_ROW,
            [
                {
                    "delivery_id": i,
                    "new_state": s,
                    "new_message_id": m,
                    "new_error": e,
                    "at": NOW,
                }
                for i, s, m, e in outcomes
            ],
        )
        return
    groups: dict[tuple, list[int]] = defaultdict(list)
    for delivery_id, state, message_id, error in outcomes:
        groups[(state, message_id, error)].append(delivery_id)
    for (state, message_id, error), ids in groups.items():
        connection.execute(
            RECORD_GROUP,
            {
                "ids": ids,
                "new_state": state,
                "new_message_id": message_id,
                "new_error": error,
                "at": NOW,
            },
        )


def run_core(
    db: str | Path, people: list[Contact], batch: int, *, returning: bool, grouped: bool
) -> Figures:
    engine = make_engine(db)
    try:
        upgrade(engine)
        back_end = "PostgreSQL" if engine.dialect.name == "postgresql" else "SQLite"
        insert_kind = "insertmanyvalues RETURNING" if returning else "executemany"
        record_kind = "grouped" if grouped else "per row"
        figures = Figures(f"core {back_end}: queue {insert_kind}, record {record_kind}")
        with transaction(engine) as connection:
            send_id = connection.execute(
                sends.insert().returning(sends.c.id),
                {
                    "message": "m",
                    "path": "messages/m.md",
                    "subject": "s",
                    "content_hash": "0" * 64,
                    "transport": "sendgrid",
                    "created_at": NOW,
                },
            ).scalar_one()
        rows = [
            {
                "send_id": send_id,
                "email": c.email,
                "email_key": c.email.lower(),
                "first_name": c.first_name,
                "last_name": c.last_name,
                "ward": c.ward,
                "created_at": NOW,
                "updated_at": NOW,
            }
            for c in people
        ]
        start = time.perf_counter()
        with transaction(engine) as connection:
            result = connection.execute(queue_statement(engine, returning), rows)
            added = len(result.all()) if returning else result.rowcount
        figures.queue = time.perf_counter() - start
        assert returning is False or added == len(people), added

        claim = claim_statement(batch)
        seen: set[int] = set()
        outcomes: list = []
        start = time.perf_counter()
        after = 0
        while True:
            with transaction(engine) as connection:
                record(connection, outcomes, grouped)
                claimed = sorted(
                    connection.execute(
                        claim, {"claim_send": send_id, "after": after, "at": NOW}
                    ).all()
                )
            outcomes = []
            if not claimed and after == 0:
                break
            if not claimed:  # one sweep from the start for rows released by others
                after = 0
                continue
            after = claimed[-1].id
            seen.update(c.id for c in claimed)
            figures.claimed += len(claimed)
            message_id = f"msg-{claimed[-1].id}"
            outcomes = [(c.id, "accepted", message_id, None) for c in claimed]
        figures.claim_record = time.perf_counter() - start
        assert len(seen) == figures.claimed == len(people), (len(seen), figures.claimed)
        with transaction(engine, write=False) as connection:
            accepted = connection.execute(
                select(func.count()).where(
                    deliveries.c.send_id == send_id, deliveries.c.state == "accepted"
                )
            ).scalar_one()
        assert accepted == len(people), accepted
        return figures
    finally:
        engine.dispose()


@contextlib.contextmanager
def postgres(url: str | None):
    if url:
        yield lambda name: url
        return
    from postgres import TemporaryCluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed (apt-get install postgresql), or pass --postgres")
    with TemporaryCluster(bin_dir, durable=True) as cluster:
        yield cluster.create_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument(
        "--postgres", help="a PostgreSQL database URL to use instead (each scenario adds a send)"
    )
    args = parser.parse_args()
    people = contacts(args.recipients)
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="bulletin-bench-") as folder:
        work = Path(folder)
        results.append(run_today(work, people, args.batch))
        results.append(run_core(work / "a.db", people, args.batch, returning=False, grouped=False))
        results.append(run_core(work / "b.db", people, args.batch, returning=True, grouped=True))
        with postgres(args.postgres) as database:
            for n, (returning, grouped) in enumerate([(False, False), (True, True)]):
                url = database(f"bench_{n}")
                results.append(
                    run_core(url, people, args.batch, returning=returning, grouped=grouped)
                )
    print(f"{args.recipients:,} recipients, claimed in batches of {args.batch:,}\n")
    print("| scenario | queue (s) | claim + record (s) | total (s) |")
    print("|---|---:|---:|---:|")
    for f in results:
        print(f"| {f.name} | {f.queue:.2f} | {f.claim_record:.2f} | {f.total:.2f} |")


if __name__ == "__main__":
    main()
