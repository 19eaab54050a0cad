"""Issue 11: a property test of resumed sends against a changing list.

Random sequences of list edits (add, remove, change the case of an address), suppressions,
forgets, sends, partial sends (`--limit`), crashes (rows left `sending`) and resumes, through
the real CLI, a real SQLite file, and the outbox or the SendGrid stand-in. After every step:

- nobody ever has two copies, and nobody gets one while outside the audience or suppressed;
- the count a send states ("To send: N") is the number of copies it then makes;
- once a send has no one pending, everyone in the audience and not suppressed has exactly one
  copy, unless a crash left their fate `unknown` (the crash here sends nothing, so they have 0);
- `bulletin status` agrees with what the transport received.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from bulletin.cli import app
from bulletin.tracking import Tracker
from bulletin.workdir import init_workdir

POOL = [f"Person{n}@example.org" for n in range(6)]
MESSAGE = """\
---
subject: "Street safety"
from: "Bromley Police <bromley.neighbourhoods@example.org>"
reference: BR-PROP-1
contacts: [lists/people.csv]
---
Dear {{ first_name or "Neighbour" }}, please report hate crime to 101.
"""

person = st.integers(0, len(POOL) - 1)
step = st.one_of(
    st.tuples(st.just("add"), person),
    st.tuples(st.just("remove"), person),
    st.tuples(st.just("case"), person),
    st.tuples(st.just("suppress"), person),
    st.tuples(st.just("forget"), person),
    st.tuples(st.just("send"), st.one_of(st.none(), st.integers(1, 3)), st.booleans()),
    st.tuples(st.just("crash"), st.integers(1, 3)),
)
steps = st.lists(step, min_size=1, max_size=14)


class World:
    """The list as the user keeps it, and what the transport has received."""

    def __init__(self, folder: Path, transport: str, sendgrid=None) -> None:
        self.folder, self.transport, self.sendgrid = folder, transport, sendgrid
        self.listed: dict[int, str] = {0: POOL[0], 1: POOL[1], 2: POOL[2]}  # index → spelling
        self.suppressed: set[str] = set()
        self.copies: Counter[str] = Counter()  # lower-case address → copies received
        self.unknown_ever: set[str] = set()
        self.write()

    def write(self) -> None:
        lines = ["email,first_name"] + [f"{e},P{i}" for i, e in sorted(self.listed.items())]
        path = self.folder / "lists" / "people.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def audience(self) -> set[str]:
        return {e.lower() for e in self.listed.values()} - self.suppressed

    def received(self) -> Counter[str]:
        if self.transport == "sendgrid":
            return Counter(self.sendgrid.delivered_emails())
        found: Counter[str] = Counter()
        for path in (self.folder / "outbox").glob("*.eml"):
            mail = message_from_bytes(path.read_bytes(), policy=policy.default)
            found[mail["To"].addresses[0].addr_spec.lower()] += 1
        return found

    def rows(self) -> dict[str, str]:
        db = self.folder / "bulletin.db"
        if not db.exists():
            return {}
        with Tracker(db) as tracker:
            latest = tracker.latest_send("street")
            return {} if latest is None else tracker.recipient_states(latest.id)


def apply(world: World, cli, action: tuple) -> None:
    kind, *args = action
    if kind == "add":
        world.listed.setdefault(args[0], POOL[args[0]])
        world.write()
    elif kind == "remove":
        world.listed.pop(args[0], None)
        world.write()
    elif kind == "case" and args[0] in world.listed:
        spelling = world.listed[args[0]]
        local, _, domain = spelling.partition("@")
        world.listed[args[0]] = f"{local.swapcase()}@{domain}"
        world.write()
    elif kind == "suppress":
        cli("suppress", "add", POOL[args[0]])
        world.suppressed.add(POOL[args[0]].lower())
    elif kind == "forget":
        before = world.received()
        cli("forget", POOL[args[0]])
        world.suppressed.add(POOL[args[0]].lower())
        if world.transport == "outbox":  # forget deletes their .eml files: remember the copies
            world.forgotten_files = getattr(world, "forgotten_files", Counter())
            world.forgotten_files.update(before - world.received())
    elif kind == "crash":
        db = world.folder / "bulletin.db"
        if db.exists():
            with Tracker(db) as tracker:
                latest = tracker.latest_send("street")
                if latest is not None:  # a run died after claiming, before any request went
                    claimed = tracker.claim(latest.id, args[0])
                    world.unknown_ever |= {c.email_key for c in claimed}
    elif kind == "send":
        send(world, cli, *args)


def send(world: World, cli, limit: int | None, resend_unknown: bool) -> None:
    args = ["send", "street", "--yes"]
    args += ["--limit", str(limit)] if limit else []
    args += ["--resend-unknown"] if resend_unknown else []
    before = world.received() + getattr(world, "forgotten_files", Counter())
    audience = world.audience()
    result = cli(*args, expect=None)
    assert result.exit_code in (0, 1, 3), result.output
    after = world.received() + getattr(world, "forgotten_files", Counter())
    new = after - before
    if result.exit_code == 1:  # nobody in the list at all: check refuses, nothing is sent
        assert "the audience is empty" in result.stderr and not new
        return
    confirmed = re.search(r"To send:   (\d+) recipient", result.stderr)
    assert confirmed, result.stderr
    assert sum(new.values()) == int(confirmed.group(1)), result.output  # confirmed == sent
    assert set(new) <= audience  # nobody outside the audience, nobody suppressed
    world.copies += new


def check_invariants(world: World, cli) -> None:
    assert all(n == 1 for n in world.copies.values()), world.copies  # never two copies
    rows = world.rows()
    if not rows:
        return
    if "pending" not in rows.values() and "sending" not in rows.values():
        for key in world.audience():  # the send is finished for everyone listed now
            if rows.get(key) == "unknown":
                assert world.copies[key] == 0  # our crashes never sent anything
            elif key in rows:
                assert world.copies[key] == 1, (key, rows, world.copies)
    status = json.loads(cli("status", "street", "--json").stdout)["sends"][0]["counts"]
    assert status["accepted"] == sum(world.copies.values())
    assert status["unknown"] == sum(1 for s in rows.values() if s == "unknown")
    assert status["sending"] == sum(1 for s in rows.values() if s == "sending")


def run_sequence(cli, transport: str, sendgrid, actions: list[tuple]) -> None:
    previous = Path.cwd()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        init_workdir(folder)
        (folder / "messages" / "street.md").write_text(MESSAGE, encoding="utf-8")
        os.chdir(folder)
        try:
            if sendgrid is not None:
                sendgrid.reset()
            world = World(folder, transport, sendgrid)
            for action in [*actions, ("send", None, False)]:
                apply(world, cli, action)
                check_invariants(world, cli)
        finally:
            os.chdir(previous)


class LenientCli:
    """The conftest runner, allowing a test to accept several exit codes (expect=None)."""

    def __init__(self, cli) -> None:
        self.cli = cli

    def __call__(self, *args: str, expect: int | None = 0):
        if expect is None:
            return self.cli.runner.invoke(app, list(args), catch_exceptions=False)
        return self.cli(*args, expect=expect)


def property_test(examples: int):
    @pytest.mark.parametrize("transport", ["outbox", "sendgrid"])
    @hypothesis_settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(actions=steps)
    def test(cli, request, transport, actions):
        # conftest's sendgrid_env points bulletin at the stand-in (retrying quickly).
        server = request.getfixturevalue("sendgrid_env") if transport == "sendgrid" else None
        run_sequence(LenientCli(cli), transport, server, actions)

    return test


test_resumed_sends_keep_their_promises = property_test(examples=5)
test_resumed_sends_keep_their_promises_at_length = pytest.mark.slow(property_test(examples=50))
