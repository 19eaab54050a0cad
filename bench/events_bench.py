"""Benchmark: `bulletin events import` of 1,000,000 events, and the webhook's events/s.

Targets (issue 5): import ≤ 60 s with peak RSS ≤ 300 MB; webhook ≥ 1,000 events/s in posts
of 1,000 events. Everything runs in a temporary folder, through the real CLI in a child
process (so its peak RSS is measured alone):

    python bench/events_bench.py                  # 1,000,000 events, JSON lines and array
    python bench/events_bench.py --events 200000  # quicker
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bulletin.tracking import State, Tracker

DELIVERIES = 100_000
PER_REQUEST = 1000  # SendGrid personalizations per request: deliveries share X-Message-Id


class _Contact:
    def __init__(self, n: int) -> None:
        self.email = f"person{n:06d}@example.org"
        self.first_name, self.last_name = f"Person{n}", "Example"
        self.ward = ("Penge and Cator", "Bickley", "Chislehurst", "Orpington")[n % 4]

    def get(self, key: str) -> str:
        return getattr(self, key, "")


def make_database(path: Path, sends: int = 4) -> list[tuple[int, int, str, str]]:
    """`DELIVERIES` accepted deliveries over `sends` sends; (send, id, email, message id)."""
    per_send = DELIVERIES // sends
    with Tracker(path) as tracker:
        for s in range(sends):
            send_id = tracker.create_send(
                message=f"bench-{s}",
                path=f"messages/bench-{s}.md",
                subject="Bench",
                reference="BENCH",
                category="bench",
                content_hash=str(s),
                transport="sendgrid",
            )
            tracker.add_recipients(send_id, (_Contact(n) for n in range(per_send)))
        rows = []
        for send in tracker.sends():
            claimed = tracker.claim(send.id, per_send)
            tracker.record(
                (c.id, State.ACCEPTED, f"xmid{c.id // PER_REQUEST}AbCdEfGhIjKl", None)
                for c in claimed
            )
            rows += [
                (send.id, c.id, c.email, f"xmid{c.id // PER_REQUEST}AbCdEfGhIjKl") for c in claimed
            ]
        return rows


KINDS = (
    ["processed"] * 30
    + ["delivered"] * 30
    + ["open"] * 20
    + ["click"] * 6
    + ["deferred"] * 5
    + ["bounce"] * 3
    + ["dropped"] * 2
    + ["spamreport", "unsubscribe"] * 2
)


def make_event(rng: random.Random, n: int, rows) -> dict:
    send_id, delivery_id, email, message_id = rows[rng.randrange(len(rows))]
    kind = rng.choice(KINDS)
    event = {
        "email": email,
        "timestamp": 1_719_820_800 + n // 10,
        "smtp-id": f"<{message_id}@ismtpd0001p1lon1.sendgrid.net>",
        "event": kind,
        "category": ["key-messages"],
        "sg_event_id": base64.urlsafe_b64encode(n.to_bytes(12, "big")).decode(),
        "sg_message_id": f"{message_id}.filterdrecv-5645d9c87f-6qvzh-1-5F5FC76C-{n % 97}.0",
    }
    roll = rng.random()
    if roll < 0.70:  # custom args, as every bulletin send attaches them
        event["bulletin_send"], event["bulletin_delivery"] = str(send_id), str(delivery_id)
    elif roll < 0.85:  # only the message id
        pass
    elif roll < 0.95:  # only the address (a late bounce)
        del event["sg_message_id"]
    else:  # nobody we know
        event["email"] = f"stranger{n}@example.net"
        del event["sg_message_id"]
    if kind == "bounce":
        event.update(
            type=rng.choice(["bounce", "blocked"]), reason="550 5.1.1 user unknown", status="5.1.1"
        )
    elif kind == "dropped":
        event["reason"] = rng.choice(["Bounced Address", "Invalid SMTPAPI header"])
    elif kind == "deferred":
        event.update(response="451 4.7.1 greylisted", attempt="1")
    elif kind in ("open", "click"):
        event.update(useragent="Mozilla/5.0 (Windows NT 10.0; Win64; x64)", ip="192.0.2.1")
        if kind == "click":
            event["url"] = "https://www.example.org/hate-crime?utm_source=bulletin"
    return event


def write_events(path: Path, count: int, rows, *, array: bool, duplicates: float = 0.02) -> None:
    rng = random.Random(5)
    with path.open("w") as handle:
        handle.write("[\n" if array else "")
        for n in range(count):
            m = rng.randrange(n) if n and rng.random() < duplicates else n  # SendGrid retries
            text = json.dumps(make_event(random.Random(m), m, rows))
            if array:
                handle.write(("  " if n == 0 else ", ") + text + "\n")
            else:
                handle.write(text + "\n")
        handle.write("]\n" if array else "")


def run_child(args: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, and stdout of one CLI run."""
    start = time.perf_counter()
    child = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out = child.stdout.read()
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"child failed: {err}")
    return elapsed, usage.ru_maxrss / 1024, out.strip() + (" | " + err.strip() if err else "")


def bench_import(folder: Path, count: int, env: dict, rows) -> None:
    for array in (False, True):
        db = folder / f"import-{'array' if array else 'lines'}.db"
        make_database(db)
        env = {**env, "BULLETIN_DB": str(db)}
        events = folder / ("events.json" if array else "events.jsonl")
        t = time.perf_counter()
        write_events(events, count, rows, array=array)
        size = events.stat().st_size / 1e6
        print(
            f"  wrote {events.name}: {count:,} events, {size:,.0f} MB in "
            f"{time.perf_counter() - t:.1f} s"
        )
        cmd = [sys.executable, "-m", "bulletin", "events", "import", str(events)]
        elapsed, rss, out = run_child(cmd, env)
        print(
            f"  import {events.name}: {elapsed:.1f} s, {count / elapsed:,.0f} events/s, "
            f"peak RSS {rss:.0f} MB\n    {out}"
        )
        elapsed, rss, out = run_child(cmd, env)
        print(f"  again (all duplicates): {elapsed:.1f} s, peak RSS {rss:.0f} MB")
        events.unlink()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_webhook(folder: Path, env: dict, rows, posts: int = 100, clients: int = 1) -> None:
    import requests
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    db = folder / f"webhook-{clients}.db"
    make_database(db)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bulletin", "events", "serve", "--port", str(port)],
        env={**env, "BULLETIN_DB": str(db), "SENDGRID_WEBHOOK_PUBLIC_KEY": public},
        stderr=subprocess.PIPE,
        text=True,
    )
    while "Listening on" not in server.stderr.readline():
        pass
    threading.Thread(target=server.stderr.read, daemon=True).start()  # drain the log
    rng = random.Random(9)
    bodies = [
        json.dumps(
            [make_event(rng, p * PER_REQUEST + i + 10**9, rows) for i in range(PER_REQUEST)]
        ).encode()
        for p in range(posts)
    ]
    failures = []

    def client(mine: list[bytes]) -> None:
        with requests.Session() as session:
            for body in mine:
                stamp = str(int(time.time()))
                signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
                answer = session.post(
                    f"http://127.0.0.1:{port}/events",
                    data=body,
                    timeout=30,
                    headers={
                        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(
                            signature
                        ).decode(),
                        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
                        "Content-Type": "application/json",
                    },
                )
                if answer.status_code != 200:
                    failures.append(answer.status_code)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(bodies[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    server.terminate()
    server.wait(30)
    total = posts * PER_REQUEST
    print(
        f"  webhook, {clients} client(s): {posts} signed posts of {PER_REQUEST:,} events in "
        f"{elapsed:.1f} s = {total / elapsed:,.0f} events/s "
        f"({elapsed / posts * 1000:.0f} ms per post); non-200: {len(failures)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--posts", type=int, default=100)
    parser.add_argument("--skip-import", action="store_true")
    options = parser.parse_args()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("BULLETIN_", "SENDGRID_", "SMTP_"))
    }
    with tempfile.TemporaryDirectory(prefix="bulletin-events-bench-") as tmp:
        folder = Path(tmp)
        rows = make_database(folder / "rows.db")
        print(f"{DELIVERIES:,} deliveries in 4 sends ({PER_REQUEST} per X-Message-Id)")
        if not options.skip_import:
            bench_import(folder, options.events, {**env, "BULLETIN_SECRET": "x" * 32}, rows)
        for clients in (1, 2):
            bench_webhook(folder, env, rows, options.posts, clients)


if __name__ == "__main__":
    main()
