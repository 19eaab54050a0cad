"""Several processes claiming one send on PostgreSQL (FOR UPDATE SKIP LOCKED): nobody twice."""

from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass

import pytest

from bulletin.ledger.engine import make_engine
from bulletin.ledger.migrate import upgrade
from bulletin.ledger.states import State
from bulletin.ledger.store import open_ledger


@dataclass
class Person:
    email: str
    first_name: str = "A"
    last_name: str = "B"

    def get(self, _key: str) -> str:
        return "Ward"


def _claimer(url: str, send_id: int, batch: int, stop_after: int | None, out, note: str) -> None:
    """Claim and record until nothing is left; optionally die (SIGKILL) holding a claim."""
    taken: list[int] = []
    with open_ledger(url) as ledger:
        after, outcomes = 0, []
        while True:
            claimed = ledger.claim(send_id, batch, after, record=outcomes)
            if not claimed:
                claimed = ledger.claim(send_id, batch, 0, record=[])  # released by a rollback
                if not claimed:
                    break
            after = claimed[-1].id
            taken += [c.id for c in claimed]
            if stop_after is not None and len(taken) >= stop_after:
                with open(note, "w") as handle:  # written before dying: a queue might lose it
                    handle.write(" ".join(map(str, taken)))
                os.kill(os.getpid(), signal.SIGKILL)  # mid-request: these rows stay `sending`
            outcomes = [(c.id, State.ACCEPTED, f"m{after}", None) for c in claimed]
        ledger.record(outcomes)
    out.put(("done", taken))


def _run(
    url: str, send_id: int, processes: int, kill_one: bool, folder
) -> list[tuple[str, list[int]]]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    note = str(folder / "killed.txt")
    workers = [
        context.Process(
            target=_claimer,
            args=(url, send_id, 500, 2000 if kill_one and n == 0 else None, out, note),
        )
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=300) for _ in range(processes - kill_one)]
    for worker in workers:
        worker.join(timeout=60)
    if kill_one:
        assert workers[0].exitcode == -signal.SIGKILL
        with open(note) as handle:
            results.append(("killed", [int(i) for i in handle.read().split()]))
    return results


@pytest.fixture
def shared_send(postgres_database):
    engine = make_engine(postgres_database)
    upgrade(engine)
    engine.dispose()
    with open_ledger(postgres_database) as ledger:
        send_id = ledger.create_send(
            message="m",
            path="messages/m.md",
            subject="S",
            reference="",
            category="",
            content_hash="h",
            transport="sendgrid",
        )
        ledger.add_recipients(send_id, (Person(f"p{n}@example.org") for n in range(20_000)))
    return postgres_database, send_id


@pytest.mark.slow
def test_four_processes_share_one_send_and_nobody_is_claimed_twice(shared_send, tmp_path):
    url, send_id = shared_send
    results = _run(url, send_id, 4, False, tmp_path)
    claimed = [i for _, taken in results for i in taken]
    assert len(claimed) == len(set(claimed)) == 20_000
    with open_ledger(url) as ledger:
        assert ledger.counts(send_id)[State.ACCEPTED] == 20_000


@pytest.mark.slow
def test_a_claimer_killed_mid_batch_leaves_its_rows_in_doubt_and_the_rest_finish(
    shared_send, tmp_path
):
    url, send_id = shared_send
    results = _run(url, send_id, 4, True, tmp_path)
    claimed = [i for _, taken in results for i in taken]
    assert len(claimed) == len(set(claimed)) == 20_000
    killed = next(taken for how, taken in results if how == "killed")
    with open_ledger(url) as ledger:
        counts = ledger.counts(send_id)
        # Its last batch was in flight: `sending` until a sender resolves it to `unknown`.
        assert counts[State.SENDING] == 500
        assert counts[State.ACCEPTED] == 20_000 - 500
        assert len(ledger.stale_to_unknown(send_id)) == 500
        assert ledger.counts(send_id)[State.UNKNOWN] == 500
    assert len(killed) >= 2000
