#!/usr/bin/env python3
"""A million-recipient send: wall time and peak RSS (issue 13's scale target, ≤ 300 MB).

    python bench/scale.py [--recipients 1000000] [--dry-run] [--postgres]

Makes a working folder with `bulletin init --example`, writes that many fictional contacts
(example.org), and sends the example letter through the loopback SendGrid stand-in
(tests/servers.py) with its ledger in SQLite (or, with --postgres, in a throw-away PostgreSQL
cluster at the newest schema, as bench/run.py starts one), measured as bench/run.py measures
(peak RSS of the process itself). Prints one line of figures; checks that the stand-in took
every address exactly once.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent / "tests")]

from run import (  # noqa: E402
    API_KEY,
    MESSAGE,
    bulletin_command,
    clean_environment,
    each_once,
    expect,
    measure,
    sendgrid_environment,
    write_contacts,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--dry-run", action="store_true", help="render only, send nothing")
    parser.add_argument("--postgres", action="store_true", help="the ledger in PostgreSQL")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        ledger: dict[str, str] = {}
        if args.postgres:
            ledger["BULLETIN_DB"] = postgres_database(stack)
        return scale(args, ledger)


def postgres_database(stack: contextlib.ExitStack) -> str:
    """An empty database in a throw-away cluster (fsync on), as bench/run.py's; the cluster
    is removed when `stack` closes."""
    from postgres import TemporaryCluster, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        sys.exit("PostgreSQL is not installed (initdb not found)")
    cluster = stack.enter_context(TemporaryCluster(bin_dir, durable=True))
    return cluster.create_database("scale")


def scale(args: argparse.Namespace, ledger: dict[str, str]) -> int:
    from servers import SendGridStub

    bulletin = bulletin_command()
    with tempfile.TemporaryDirectory(prefix="bulletin-scale-") as base:
        folder = Path(base) / "work"
        expect(measure([*bulletin, "init", "--example", str(folder)], Path(base), {}), "init")
        (folder / "contacts" / "coordinators.csv").unlink()
        if ledger:  # the newest schema, as an administrator makes it (`bulletin db upgrade`)
            upgrade = [*bulletin, "db", "upgrade"]
            expect(measure(upgrade, folder, clean_environment(**ledger)), "db upgrade")
        started = time.perf_counter()
        write_contacts(folder / "contacts" / "contacts.csv", args.recipients)
        print(f"wrote {args.recipients:,} contacts in {time.perf_counter() - started:.1f} s")
        with SendGridStub(api_key=API_KEY, keep_bodies=False) as stub:
            env = sendgrid_environment(stub, **ledger)
            command = [*bulletin, "send", MESSAGE, "--dry-run" if args.dry_run else "--yes"]
            run = expect(measure(command, folder, env, quiet_stdout=True), "send")
            if not args.dry_run:
                each_once(stub, args.recipients)
        where = "PostgreSQL" if ledger else "SQLite"
        what = "dry run" if args.dry_run else f"SendGrid send, {where} ledger"
        print(
            f"{what}, {args.recipients:,} recipients: {run.seconds:.1f} s, "
            f"CPU {run.cpu_seconds:.1f} s, peak RSS {run.rss_mb:.0f} MB (target ≤ 300 MB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
