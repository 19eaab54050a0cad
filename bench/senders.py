#!/usr/bin/env python3
"""Several senders on one PostgreSQL send against a slow SendGrid (issue 13).

    python bench/senders.py [--recipients 20000] [--delay 0.2] [--senders 4] [--in-flight 4]
                            [--postgres URL]

One `bulletin send MESSAGE --yes` process, then `--senders` processes started together, each
time on a fresh database, against the loopback SendGrid stand-in (tests/servers.py) answering
every request after `--delay` seconds. Prints the wall time of each (first start to last
exit), the requests each made, and checks that the stand-in took every address exactly once.
PostgreSQL is a throw-away cluster (tests/postgres.py, fsync on) unless --postgres names a
server (its databases bench_senders_N are created and dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

API_KEY = "SG.bench-senders"
SECRET = "bench-secret-of-at-least-thirty-two-characters"
MESSAGE = """\
---
subject: 'Street safety update for {{ first_name or "neighbour" }}'
from: bromley.neighbourhoods@example.org
category: street-safety
reference: BR-BENCH-1
contacts: [lists/people.csv]
---
Dear {{ first_name or "Neighbour" }},

Please report all hate crime to 999 in an emergency, or to 101.
"""


def _environment(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BULLETIN_", "SENDGRID_", "SMTP_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONPATH=str(ROOT), **extra)
    return env


def _workdir(base: Path, recipients: int) -> Path:
    folder = base / "work"
    subprocess.run(
        [sys.executable, "-m", "bulletin", "init", "--example", str(folder)],
        check=True,
        capture_output=True,
        env=_environment(),
    )
    lists = folder / "lists"
    lists.mkdir()
    with (lists / "people.csv").open("w", encoding="utf-8") as handle:
        handle.write("email,first_name,last_name,ward\n")
        for n in range(1, recipients + 1):
            handle.write(f"person{n:06d}@example.org,Person{n},Example,Penge and Cator\n")
    (folder / "messages" / "street.md").write_text(MESSAGE, encoding="utf-8")
    return folder


@contextlib.contextmanager
def _databases(url: str | None) -> Iterator[Callable[[str], str]]:
    if url:
        from sqlalchemy import create_engine, text

        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        made: list[str] = []

        def create(name: str) -> str:
            with admin.connect() as c:
                c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
                c.execute(text(f"CREATE DATABASE {name}"))
            made.append(name)
            return url.rsplit("/", 1)[0] + "/" + name

        try:
            yield create
        finally:
            with admin.connect() as c:
                for name in made:
                    c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()
        return
    from postgres import TemporaryCluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries found (set BULLETIN_PG_BIN or pass --postgres)")
    with TemporaryCluster(bin_dir, durable=True) as cluster:
        yield cluster.create_database


def _run(folder: Path, env: dict[str, str], senders: int) -> tuple[float, list[int]]:
    command = [sys.executable, "-m", "bulletin", "send", "street", "--yes"]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(
            command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(senders)
    ]
    codes = []
    for process in processes:
        _out, err = process.communicate(timeout=900)
        if process.returncode != 0:
            raise SystemExit(f"a sender exited {process.returncode}: {err.decode()[-2000:]}")
        codes.append(process.returncode)
    return time.perf_counter() - started, codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per request")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--postgres", help="a server URL instead of a throw-away cluster")
    args = parser.parse_args()

    from servers import SendGridStub

    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="bulletin-senders-") as temp,
        _databases(args.postgres) as create,
        SendGridStub(api_key=API_KEY, keep_bodies=False) as stub,
    ):
        folder = _workdir(Path(temp), args.recipients)
        stub.delay = args.delay
        for number, senders in enumerate((1, args.senders), 1):
            db = create(f"bench_senders_{number}")
            env = _environment(
                BULLETIN_DB=db,
                SENDGRID_API_KEY=API_KEY,
                BULLETIN_SENDGRID_URL=stub.url,
                BULLETIN_SECRET=SECRET,
                BULLETIN_PUBLIC_URL="https://bulletin.example.org",
                BULLETIN_IN_FLIGHT=str(args.in_flight),
                BULLETIN_TIMEOUT="120",
            )
            subprocess.run(
                [sys.executable, "-m", "bulletin", "db", "upgrade"],
                cwd=folder,
                env=env,
                check=True,
                capture_output=True,
            )
            stub.reset()
            seconds, _codes = _run(folder, env, senders)
            delivered = stub.delivered_emails()
            twice = sum(1 for n in delivered.values() if n > 1)
            if len(delivered) != args.recipients or twice:
                raise SystemExit(
                    f"{senders} sender(s): the stand-in took {len(delivered)} addresses, "
                    f"{twice} more than once"
                )
            rows.append((senders, seconds, stub.requests, stub.most_at_once, twice))
    load = os.getloadavg()
    print(
        f"\n{args.recipients:,} recipients, stand-in answering after {args.delay * 1000:.0f} ms, "
        f"BULLETIN_IN_FLIGHT={args.in_flight}; load average {load[0]:.1f} {load[1]:.1f} "
        f"{load[2]:.1f} on {os.cpu_count()} CPUs\n"
    )
    print("| senders | wall time (s) | requests | most at once | duplicates |")
    print("|---:|---:|---:|---:|---:|")
    for senders, seconds, requests, most, twice in rows:
        print(f"| {senders} | {seconds:.2f} | {requests} | {most} | {twice} |")


if __name__ == "__main__":
    main()
