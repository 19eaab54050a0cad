"""`kill -9` of `bulletin events import` and of `bulletin events serve` mid-import.

Events must be committed a whole batch at a time, or not at all: after the kill, the database
must be exactly what applying the committed events (and nothing else) gives, and after the
import is run again (or SendGrid retries the posts it got no 200 for) it must be exactly what
one clean import gives. The schedule of kill points is seeded.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sqlite3
import threading
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

import pytest
from reliability_harness import connect, integrity, start, wait_until
from servers import free_port

from bulletin.events import apply_events, import_events, parse_event
from bulletin.tracking import Tracker

SEED = 88
KINDS = ["processed", "delivered", "open", "open", "click", "open", "click", "deferred"]


def make_events(db: Path) -> list[dict]:
    with connect(db) as connection:
        rows = connection.execute("SELECT id, email FROM deliveries ORDER BY id").fetchall()
    rng = random.Random(SEED)
    events = []
    for row in rows:
        for n, kind in enumerate(KINDS):
            events.append(
                {
                    "event": kind,
                    "email": row["email"],
                    "timestamp": 1467360000 + rng.randint(0, 86400),
                    "sg_event_id": f"ev-{row['id']}-{n}",
                    "bulletin_send": "1",
                    "bulletin_delivery": str(row["id"]),
                }
            )
        if row["id"] % 50 == 0:
            events.append(
                dict(
                    events[-1],
                    event="bounce",
                    type="bounce",
                    sg_event_id=f"ev-{row['id']}-bounce",
                    reason="550 no such user",
                )
            )
    rng.shuffle(events)  # SendGrid sends them out of order
    return events


def snapshot(db: Path) -> tuple:
    with connect(db) as connection:
        return (
            connection.execute(
                "SELECT id, state, opened, clicked, first_opened_at, last_clicked_at "
                "FROM deliveries ORDER BY id"
            ).fetchall(),
            connection.execute("SELECT sg_event_id FROM events ORDER BY sg_event_id").fetchall(),
            connection.execute("SELECT email_hash FROM suppressions ORDER BY 1").fetchall(),
        )


def committed_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as connection:
        return {r[0] for r in connection.execute("SELECT sg_event_id FROM events")}


def copy_db(source: Path, target: Path) -> Path:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return target


def apply_only(db: Path, events: list[dict], ids: set[str]) -> None:
    """Apply exactly the events whose ids are in `ids`, in file order, in batches."""
    chosen = [parse_event(e) for e in events if e["sg_event_id"] in ids]
    with Tracker(db) as tracker:
        for start_at in range(0, len(chosen), 5000):
            apply_events(tracker, chosen[start_at : start_at + 5000])


@pytest.fixture
def sent(workdir, cli, sendgrid_env, audience, db_path, tmp_path):
    """A finished send to 2,100 volunteers, its events file and the clean-import result."""
    cli("send", "eu-referendum", "--yes")
    events = make_events(db_path)
    (workdir / "events.json").write_text(json.dumps(events), encoding="utf-8")
    pristine = copy_db(db_path, tmp_path / "pristine.db")
    reference = copy_db(pristine, tmp_path / "reference.db")
    with Tracker(reference) as tracker:
        import_events(tracker, workdir / "events.json")
    return pristine, events, snapshot(reference)


@pytest.mark.slow  # a kill -9 loop
def test_kill_9_of_events_import_never_half_applies(workdir, cli, sent, db_path, monkeypatch):
    pristine, events, reference = sent
    rng = random.Random(SEED)
    partial = 0
    for repeat in range(4):
        db = copy_db(pristine, workdir / f"import-{repeat}.db")
        monkeypatch.setenv("BULLETIN_DB", str(db))
        process = start(workdir, "events", "import", "events.json")
        batches = rng.randint(0, len(events) // 5000 - 1)  # commits to wait for, then kill
        wait_until(
            lambda d=db, n=batches, p=process: (
                p.poll() is not None or len(committed_ids(d)) >= n * 5000
            ),
            "events to be committed",
        )
        time.sleep(rng.uniform(0, 0.03))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert integrity(db) == "ok"
        ids = committed_ids(db)
        partial += 0 < len(ids) < len(events)
        expected = copy_db(pristine, workdir / f"expected-{repeat}.db")
        apply_only(expected, events, ids)
        assert snapshot(db) == snapshot(expected)  # exactly the committed events, all applied
        cli("events", "import", "events.json")  # run again: duplicates are skipped
        assert snapshot(db) == reference
    assert partial  # at least one kill landed mid-import


def post(url: str, batch: list[dict]) -> bool:
    request = Request(
        f"{url}/events",
        data=json.dumps(batch).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urlopen(request, timeout=10) as response:
            return response.status == 200
    except (URLError, ConnectionError, TimeoutError):
        return False


def serve(workdir: Path, port: int):
    process = start(workdir, "events", "serve", "--insecure", "--port", str(port))
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urlopen(f"{url}/nothing", timeout=1)
        except URLError as error:
            return getattr(error, "code", None) == 404
        return False

    wait_until(up, "the webhook server to listen", timeout=30)
    return process, url


@pytest.mark.slow  # a kill -9 loop
def test_kill_9_of_the_webhook_server_mid_post_is_retried_never_half_applied(
    workdir, sent, monkeypatch
):
    pristine, events, reference = sent
    batches = [events[i : i + 500] for i in range(0, len(events), 500)]
    rng = random.Random(SEED + 1)
    for repeat in range(3):
        db = copy_db(pristine, workdir / f"serve-{repeat}.db")
        monkeypatch.setenv("BULLETIN_DB", str(db))
        port = free_port()
        server, url = serve(workdir, port)
        acknowledged = rng.randint(0, len(batches) - 2)
        for batch in batches[:acknowledged]:
            assert post(url, batch)
        # Kill while the next post is in flight, as SendGrid keeps posting.
        flight = threading.Thread(target=post, args=(url, batches[acknowledged]))
        flight.start()
        time.sleep(rng.uniform(0, 0.04))
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        flight.join(timeout=30)
        ids = committed_ids(db)
        for batch in batches:  # each post is in whole or not at all
            present = {e["sg_event_id"] in ids for e in batch}
            assert len(present) == 1, "a post was half applied"
        assert all(e["sg_event_id"] in ids for b in batches[:acknowledged] for e in b)
        # SendGrid retries every post without a 200, against the restarted server.
        server, url = serve(workdir, port)
        try:
            for batch in batches[acknowledged:]:
                assert post(url, batch)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        assert snapshot(db) == reference
        shutil.rmtree(workdir / "outbox", ignore_errors=True)
