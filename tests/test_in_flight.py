"""Several SendGrid requests in flight at once (BULLETIN_IN_FLIGHT, issue 13).

Every batch is still claimed (committed `sending`) before its request goes; outcomes are
recorded as they arrive; a 429 holds back every request; a crash or Ctrl-C with several in
flight leaves each recipient accepted, pending or unknown, never sent twice.
"""

from __future__ import annotations

import signal
import time

from servers import rate_limited
from test_crash import TIMEOUT, assert_sent_once_and_accounted_for, finish, start
from test_send import people, states, street_message

from bulletin.check import check_message
from bulletin.config import load_settings
from bulletin.send import execute, plan_send


def test_requests_overlap_up_to_the_setting(workdir, cli, sendgrid_env, monkeypatch):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "3")
    sendgrid_env.delay = 0.3
    name = street_message(workdir, people(5000))
    started = time.monotonic()
    result = cli("send", name, "--yes")
    took = time.monotonic() - started
    assert "Send #1: 5000 accepted, 0 failed, 0 unknown, 0 still pending." in result.stdout
    assert 2 <= sendgrid_env.most_at_once <= 3  # overlapping, never more than the setting
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == 5000 and set(delivered.values()) == {1}
    assert states(workdir / "bulletin.db") == {"accepted": 5000}
    assert took < 5 * 0.3 + 20  # not a timing test; only that it finished


def test_every_batch_is_claimed_before_its_request(workdir, sendgrid_env, monkeypatch):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "4")
    name = street_message(workdir, people(3000))
    settings = load_settings(workdir)
    plan = plan_send(check_message(name, settings), settings)
    seen: list[dict[str, int]] = []
    transport = plan.transport
    post = transport._post

    def watching(body):  # runs on a request thread: reads only
        seen.append(states(workdir / "bulletin.db"))
        assert '"bulletin_delivery": "' in body
        return post(body)

    transport._post = watching  # type: ignore[method-assign]
    report = execute(plan, settings)
    assert report.accepted == 3000
    # When each request went, its batch was already committed as `sending`.
    assert all(s.get("sending", 0) >= 1000 for s in seen) and len(seen) == 3


def test_a_429_holds_back_every_request(workdir, cli, sendgrid_env, monkeypatch):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "2")
    monkeypatch.setenv("BULLETIN_RETRY_MAX_WAIT", "5")  # the fixture's is short
    sendgrid_env.delay = 0.2
    sendgrid_env.script(rate_limited(reset_in=1, retry_after=1))
    name = street_message(workdir, people(4000))
    cli("send", name, "--yes")
    first, _second, *later = sorted(sendgrid_env.arrivals)
    # The first request's 429 (Retry-After: 1) comes at once; the second is answered 0.2 s
    # later and its slot's next request waits out the same second instead of going then.
    assert later and min(later) - first >= 0.9
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == 4000 and set(delivered.values()) == {1}


def test_sigkill_with_several_requests_in_flight_leaves_them_all_unknown(
    workdir, cli, sendgrid_env, monkeypatch
):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "3")
    monkeypatch.setenv("BULLETIN_TIMEOUT", "60")  # slow, not lost: only the kill ends them
    sg, db = sendgrid_env, workdir / "bulletin.db"
    audience = {r["email"] for r in people(3500)}
    name = street_message(workdir, people(3500))
    sg.delay = 30  # read and logged as accepted, never answered: the kill lands mid-request
    process = start(workdir, name)
    assert sg.wait_accepted(3, timeout=TIMEOUT)
    process.kill()
    assert process.wait(timeout=TIMEOUT) == -signal.SIGKILL
    assert states(db) == {"sending": 3000, "pending": 500}
    sg.delay = 0
    result = cli("send", name, "--yes", expect=3)
    assert "Send #1: 500 accepted, 0 failed, 3000 unknown, 0 still pending." in result.stdout
    assert_sent_once_and_accounted_for(sg, db, audience)
    assert sg.requests == 4


def test_ctrl_c_with_several_in_flight_waits_for_their_answers(
    workdir, cli, sendgrid_env, monkeypatch
):
    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "2")
    monkeypatch.setenv("BULLETIN_TIMEOUT", "30")
    sg, db = sendgrid_env, workdir / "bulletin.db"
    audience = {r["email"] for r in people(5000)}
    name = street_message(workdir, people(5000))
    sg.delay = 1.5
    process = start(workdir, name)
    assert sg.wait_accepted(2, timeout=TIMEOUT)
    process.send_signal(signal.SIGINT)
    code, _out, err = finish(process)
    assert code == 130, err
    assert f"Run `bulletin send {name}` again to resume" in err
    # Both requests in flight were answered and recorded; no further batch was claimed.
    assert states(db) == {"accepted": 2000, "pending": 3000}
    assert sg.requests == 2
    sg.delay = 0
    cli("send", name, "--yes")
    assert_sent_once_and_accounted_for(sg, db, audience)
    assert states(db) == {"accepted": 5000}


def test_smtp_and_the_outbox_keep_one_request_in_flight(workdir, settings, monkeypatch):
    from bulletin.transports import make_transport

    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "8")
    assert getattr(make_transport(settings, "outbox"), "in_flight", 1) == 1


def test_a_sender_waiting_on_its_requests_keeps_its_lease(workdir, sendgrid_env, monkeypatch):
    from bulletin.ledger.store import open_ledger

    monkeypatch.setenv("BULLETIN_LEASE_SECONDS", "3")
    monkeypatch.setenv("BULLETIN_TIMEOUT", "30")
    sendgrid_env.delay = 6  # one request, answered long after the lease would have run out
    process = start(workdir, "eu-referendum")
    assert sendgrid_env.wait_accepted(1, timeout=TIMEOUT)
    time.sleep(4)
    with open_ledger(workdir / "bulletin.db") as ledger:
        assert [h.live for h in ledger.holders(1)] == [True]  # renewed while it waited
    code, _out, err = finish(process)
    assert code == 0, err


def test_requests_are_built_one_at_a_time(workdir, sendgrid_env, monkeypatch):
    """Request threads build their batches one at a time (the sending thread claims the next
    meanwhile): several building at once cost more in passing Python's lock between them than
    the building itself."""
    import threading

    from bulletin.transports.sendgrid import RequestTemplate

    monkeypatch.setenv("BULLETIN_IN_FLIGHT", "4")
    sendgrid_env.delay = 0.1
    name = street_message(workdir, people(4500))
    settings = load_settings(workdir)
    plan = plan_send(check_message(name, settings), settings)
    building_now, most = [0], [0]
    builders: set[str] = set()
    guard = threading.Lock()
    requests = RequestTemplate.requests

    def building(self, keys, batch):
        with guard:
            building_now[0] += 1
            most[0] = max(most[0], building_now[0])
            builders.add(threading.current_thread().name)
        time.sleep(0.05)  # a slow build: others would start meanwhile if they could
        try:
            return requests(self, keys, batch)
        finally:
            with guard:
                building_now[0] -= 1

    monkeypatch.setattr(RequestTemplate, "requests", building)
    report = execute(plan, settings)
    assert report.accepted == 4500
    assert most[0] == 1 and len(builders) == 5  # each on its own request thread
    assert threading.current_thread().name not in builders
    assert sendgrid_env.most_at_once >= 2  # the requests themselves still overlap
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == 4500 and set(delivered.values()) == {1}
