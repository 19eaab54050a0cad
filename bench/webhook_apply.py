#!/usr/bin/env python3
"""In-process profile of one webhook post: signature check, JSON parsing, `apply_events`.

    python bench/webhook_apply.py [--posts 20] [--deliveries 20000] [--postgres] [--profile]

`bench/run.py --only webhook` measures the whole server from outside; this script times the
three parts a post costs inside the server (the same calls `bulletin events serve` makes:
`check_signature`, then `Webhook.apply`, which parses and applies the batch), so a change to
one of them shows alone. The events are bench/run.py's (ten per delivery, 1 in 50 bounces,
1 in 200 for an unknown delivery, SendGrid's retries as duplicates). `--postgres` runs the
same against a durable throw-away PostgreSQL cluster (tests/postgres.py); `--profile` writes
bench/out/profile-webhook-apply.prof and prints the top entries.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from run import SECRET, events, webhook_signer  # noqa: E402

from bulletin.config import Settings  # noqa: E402
from bulletin.events import apply_events  # noqa: E402
from bulletin.ledger.states import State  # noqa: E402
from bulletin.tracking import Tracker  # noqa: E402
from bulletin.web import webhook as webhook_module  # noqa: E402
from bulletin.web.webhook import SIGNATURE_HEADER, Webhook, check_signature  # noqa: E402

PER_REQUEST = 1000  # SendGrid personalizations per request: deliveries share X-Message-Id


class Contact:
    def __init__(self, n: int) -> None:
        self.email = f"person{n:06d}@example.org"
        self.first_name, self.last_name, self.ward = f"Person{n}", "Example", "Bickley"

    def get(self, key: str) -> str:
        return getattr(self, key, "")


def make_send(db, count: int) -> list[tuple[int, int, str, str]]:
    """One accepted SendGrid send of `count`; (send id, delivery id, email, message id)."""
    with Tracker(db) as tracker:
        send_id = tracker.create_send(
            message="bench",
            path="messages/bench.md",
            subject="Bench",
            reference="BENCH",
            category="bench",
            content_hash="0",
            transport="sendgrid",
        )
        tracker.add_recipients(send_id, (Contact(n) for n in range(count)))
        rows = []
        while claimed := tracker.claim(send_id, PER_REQUEST):
            xmid = f"xmid{claimed[0].id}AbCdEfGhIjKl"
            tracker.record((c.id, State.ACCEPTED, xmid, None) for c in claimed)
            rows += [(send_id, c.id, c.email, xmid) for c in claimed]
        return rows


def bench(db, options) -> None:
    rows = make_send(db, options.deliveries)
    batches = [[]]
    for event in events(rows[-options.posts * 100 :], options.posts * PER_REQUEST, seed=5):
        if len(batches[-1]) == PER_REQUEST:
            batches.append([])
        batches[-1].append(event)
    public_key, sign = webhook_signer()
    stamp = str(int(time.time()))
    bodies = [json.dumps(batch).encode() for batch in batches]
    signatures = [sign(stamp, body) for body in bodies]
    with tempfile.TemporaryDirectory() as workdir:
        settings = Settings(
            workdir=Path(workdir), db=str(db), webhook_public_key=public_key, secret=SECRET
        )
        webhook = Webhook(settings)
        ledger_time = [0.0]

        def timed(tracker, batch):
            started = time.perf_counter()
            try:
                return apply_events(tracker, batch)
            finally:
                ledger_time[0] += time.perf_counter() - started

        webhook_module.apply_events = timed
        profiler = cProfile.Profile() if options.profile else None
        verify = apply = 0.0
        tallies = []
        with contextlib.ExitStack() as stack:
            stack.callback(webhook.close)
            if profiler:
                profiler.enable()
            cpu = time.process_time()
            for body, signature in zip(bodies, signatures, strict=True):
                started = time.perf_counter()
                problem = check_signature(webhook.key, signature, stamp, body)
                assert problem is None, problem
                middle = time.perf_counter()
                status, tally, _ = webhook.apply(body)
                assert status == 200, tally
                verify += middle - started
                apply += time.perf_counter() - middle
                tallies.append(tally)
            cpu = time.process_time() - cpu
            if profiler:
                profiler.disable()
    total = sum(len(b) for b in batches)
    print(
        f"{len(bodies)} posts of {PER_REQUEST:,} events ({SIGNATURE_HEADER} checked): "
        f"verify {verify / len(bodies) * 1000:.1f} ms, parse "
        f"{(apply - ledger_time[0]) / len(bodies) * 1000:.1f} ms, apply_events "
        f"{ledger_time[0] / len(bodies) * 1000:.1f} ms per post = {total / (verify + apply):,.0f} "
        f"events/s in-process; this process's CPU {cpu / len(bodies) * 1000:.1f} ms per post"
    )
    print("first post:", tallies[0])
    if profiler:
        out = ROOT / "bench" / "out"
        out.mkdir(exist_ok=True)
        path = out / "profile-webhook-apply.prof"
        profiler.dump_stats(path)
        pstats.Stats(str(path)).sort_stats("cumulative").print_stats(35)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--deliveries", type=int, default=20_000)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args()
    if options.postgres:
        from postgres import TemporaryCluster, find_bin_dir

        from bulletin.ledger.engine import make_engine
        from bulletin.ledger.migrate import upgrade

        with TemporaryCluster(find_bin_dir(), durable=True) as cluster:
            url = cluster.create_database("bench")
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            bench(url, options)
        return
    with tempfile.TemporaryDirectory() as folder:
        bench(Path(folder) / "bulletin.db", options)


if __name__ == "__main__":
    main()
