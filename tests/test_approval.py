"""Sign-off before send (issue 17): the fingerprint, the gate on send and run, the signed link
and the approval page on the real web server (headless Chromium for the approver's clicks),
and the record in status, history and the report.
"""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from accessibility import assert_accessible
from browser import save_screenshot

from bulletin import approval
from bulletin.check import check_message
from bulletin.config import load_settings
from bulletin.unsubscribe import make_token as unsubscribe_token
from bulletin.web.webhook import make_server

SECRET = "approval-test-secret-0123456789abcdef"
PUBLIC = "https://bulletin.example.org"
COMMANDER = "commander@example.org"
DEPUTY = "deputy@example.org"
MESSAGE = "messages/eu-referendum.md"


@pytest.fixture
def env(monkeypatch, workdir):
    for name, value in {
        "BULLETIN_SECRET": SECRET,
        "BULLETIN_PUBLIC_URL": PUBLIC,
        "BULLETIN_APPROVALS": "1",
        "BULLETIN_APPROVERS": f"{COMMANDER}, {DEPUTY}",
    }.items():
        monkeypatch.setenv(name, value)
    return workdir


class Server:
    def __init__(self, workdir: Path) -> None:
        self.server = make_server(load_settings(workdir), "127.0.0.1", 0, insecure=True)
        self.url = self.server.url
        self.db = workdir / "bulletin.db"
        self.server.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def local(self, link: str) -> str:
        return self.url + link.removeprefix(PUBLIC)

    def events(self) -> list[tuple]:
        db = sqlite3.connect(self.db)
        try:
            return db.execute(
                "SELECT kind, approver, route, comment FROM approval_events ORDER BY id"
            ).fetchall()
        finally:
            db.close()


@pytest.fixture
def server(env):
    running = Server(env)
    yield running
    running.stop()


def requested_link(workdir: Path, cli, approver: str = COMMANDER) -> str:
    """Ask for approval; the link in the newest approval email of the outbox."""
    cli("approve", "eu-referendum", "--request", approver)
    newest = max((workdir / "outbox").glob("approval-*.eml"), key=lambda p: p.stat().st_mtime_ns)
    mail = message_from_bytes(newest.read_bytes(), policy=policy.default)
    assert mail["To"].addresses[0].addr_spec == approver
    text = mail.get_body(("plain",)).get_content()
    return re.search(rf"{re.escape(PUBLIC)}/approve\?t=\S+", text).group(0)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["t"][0]


def edit_one_word(workdir: Path) -> None:
    path = workdir / MESSAGE
    path.write_text(path.read_text().replace("grateful", "thankful", 1))


# --- the fingerprint ---------------------------------------------------------------------------

BASE = {
    "message_bytes": b"---\nsubject: Hi\n---\nDear all\n",
    "layouts": {"email.html": b"<p>{{ body }}</p>", "email.txt": b"{{ body }}"},
    "audience": {"ward": ["Penge and Cator"]},
    "contacts": ["contacts/*.csv"],
    "identity": {"from": "a@example.org"},
}


@pytest.mark.parametrize(
    "change",
    [
        {"message_bytes": b"---\nsubject: Hi\n---\nDear all,\n"},
        {"layouts": {**BASE["layouts"], "email.html": b"<p>{{ body }}</p>\n"}},
        {"layouts": {**BASE["layouts"], "email.txt": b"{{ body }}!"}},
        {"audience": {"ward": ["Penge and Cator", "Copers Cope"]}},
        {"audience": {}},
        {"contacts": ["contacts/coordinators.csv"]},
        {"identity": {"from": "b@example.org"}},
    ],
)
def test_editing_anything_recipients_receive_changes_the_fingerprint(change):
    assert approval.fingerprint(**{**BASE, **change}) != approval.fingerprint(**BASE)


def test_the_fingerprint_is_stable():
    assert approval.fingerprint(**BASE) == approval.fingerprint(**dict(BASE))
    assert re.fullmatch(r"[0-9a-f]{64}", approval.fingerprint(**BASE))


def test_a_growing_contact_list_keeps_the_fingerprint_but_a_template_edit_does_not(env):
    settings = load_settings(env)
    before = approval.current_version(check_message("eu-referendum", settings), settings)
    with (env / "contacts" / "coordinators.csv").open("a", encoding="utf-8") as handle:
        handle.write("new.person@example.org,New,Person,Penge and Cator,coordinator,,,,\n")
    grown = approval.current_version(check_message("eu-referendum", settings), settings)
    assert grown.fingerprint == before.fingerprint
    assert grown.audience == before.audience + 1
    (env / "templates" / "email.txt").write_text("changed\n{{ body }}\n")
    edited = approval.current_version(check_message("eu-referendum", settings), settings)
    assert edited.fingerprint != before.fingerprint


# --- tokens ------------------------------------------------------------------------------------


def test_tokens_are_bound_to_request_approver_version_and_purpose():
    token = approval.make_token(SECRET, 7, COMMANDER, "f" * 64, 2_000_000_000)
    assert approval.verify_token(SECRET, token, COMMANDER, "f" * 64)
    assert approval.verify_token(SECRET, token, COMMANDER.upper(), "f" * 64)
    assert not approval.verify_token(SECRET, token, DEPUTY, "f" * 64)
    assert not approval.verify_token(SECRET, token, COMMANDER, "e" * 64)
    assert not approval.verify_token("another-secret", token, COMMANDER, "f" * 64)
    longer = token.replace("2000000000", "2000000001")
    assert not approval.verify_token(SECRET, longer, COMMANDER, "f" * 64)
    # An unsubscribe token has the same shape, and never verifies here.
    assert not approval.verify_token(
        SECRET, unsubscribe_token(SECRET, 7, 1, COMMANDER), COMMANDER, ""
    )


# --- the gate on send ----------------------------------------------------------------------------


def test_send_refuses_an_unapproved_message_in_one_line_and_sends_nothing(env, cli):
    result = cli("send", "eu-referendum", "--yes", expect=1)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: messages/eu-referendum.md (version ")
    assert "needs 1 approval(s) from BULLETIN_APPROVERS and has 0" in lines[-1]
    assert "bulletin approve eu-referendum --request" in lines[-1]
    assert not (env / "outbox").exists() or not list((env / "outbox").glob("1-*.eml"))


def test_a_test_copy_needs_no_approval(env, cli):
    result = cli("send", "eu-referendum", "--test", "staff@example.org")
    assert "Test copy for" in result.stdout


def test_too_few_approvers_for_the_setting_is_a_config_error(env, cli, monkeypatch):
    monkeypatch.setenv("BULLETIN_APPROVALS", "3")
    result = cli("send", "eu-referendum", "--yes", expect=1)
    assert "BULLETIN_APPROVALS=3 but BULLETIN_APPROVERS lists 2" in result.stderr


def test_approval_in_person_lets_the_send_go_and_is_recorded(env, cli):
    cli("approve", "eu-referendum", "--as", f"Ada Commander <{COMMANDER}>")
    result = cli("send", "eu-referendum", "--yes")
    assert "Approved:  Ada Commander <commander@example.org> (in person at the command line" in (
        result.stderr
    )
    assert "audience at approval 34, now 34" in result.stderr
    send = json.loads(cli("status", "1", "--json").stdout)["sends"][0]
    (given,) = send["approval"]["approvals"]
    assert given["approver"] == COMMANDER and given["name"] == "Ada Commander"
    assert given["route"] == "in person at the command line"
    assert send["approval"]["fingerprint"] == given["fingerprint"]
    shown = cli("status", "1").stdout
    assert "Approved: by Ada Commander <commander@example.org>" in shown
    assert "in person at the command line" in cli("status").stdout


def test_only_listed_approvers_can_approve(env, cli):
    result = cli("approve", "eu-referendum", "--as", "someone@example.org", expect=1)
    assert "not in BULLETIN_APPROVERS" in result.stderr


def test_two_approvals_must_come_from_different_approvers(env, cli, monkeypatch):
    monkeypatch.setenv("BULLETIN_APPROVALS", "2")
    cli("approve", "eu-referendum", "--as", COMMANDER)
    cli("approve", "eu-referendum", "--as", COMMANDER)
    assert "has 1 (commander@example.org)" in cli("send", "eu-referendum", "--yes", expect=1).stderr
    cli("approve", "eu-referendum", "--as", DEPUTY)
    cli("send", "eu-referendum", "--yes")


def test_editing_one_word_voids_the_approval(env, cli):
    cli("approve", "eu-referendum", "--as", COMMANDER)
    edit_one_word(env)
    result = cli("send", "eu-referendum", "--yes", expect=1)
    assert "an earlier version was approved; it has changed since" in result.stderr


def test_the_send_summary_shows_the_audience_then_and_now(env, cli):
    cli("approve", "eu-referendum", "--as", COMMANDER)
    with (env / "contacts" / "coordinators.csv").open("a", encoding="utf-8") as handle:
        handle.write("new.person@example.org,New,Person,Penge and Cator,coordinator,,,,\n")
    result = cli("send", "eu-referendum", "--dry-run")
    assert "audience at approval 34, now 35" in result.stderr


# --- the request email ---------------------------------------------------------------------------


def test_the_request_shows_the_bulletin_its_audience_and_the_changes(env, cli):
    cli("approve", "eu-referendum", "--as", COMMANDER)
    edit_one_word(env)
    cli("approve", "eu-referendum", "--request", f"Deputy <{DEPUTY}>")
    (path,) = (env / "outbox").glob("approval-*.eml")
    mail = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert mail["Subject"].startswith("Approval requested: Key messages from the Borough")
    text = mail.get_body(("plain",)).get_content()
    assert "How many: 34 email recipient(s)" in text
    assert "-circulate them to your contacts" not in text  # the diff is by line
    assert re.search(r"^-.*I would be grateful", text, re.MULTILINE)
    assert re.search(r"^\+.*I would be thankful", text, re.MULTILINE)
    assert "Dear Margaret," in text  # the bulletin as its first recipient sees it
    html = mail.get_body(("html",)).get_content()
    assert "Dear Margaret," in html and "/approve?t=" in html


def test_a_request_through_smtp_reaches_the_approver(env, cli, smtp_env):
    cli("approve", "eu-referendum", "--request", COMMANDER)
    (mail,) = smtp_env.parsed()
    assert mail["To"].addresses[0].addr_spec == COMMANDER
    assert "List-Unsubscribe" not in mail


def test_a_request_through_sendgrid_reaches_the_approver(env, cli, sendgrid_env):
    cli("approve", "eu-referendum", "--request", COMMANDER)
    (accepted,) = sendgrid_env.accepted
    assert accepted["recipients"] == [COMMANDER]
    body = accepted["body"]
    (personalization,) = body["personalizations"]
    assert personalization["custom_args"]["bulletin_test"] == "approval"  # not a delivery
    assert "headers" not in personalization  # no List-Unsubscribe on a request
    assert f"{PUBLIC}/approve?t=" in body["content"][0]["value"]


# --- the approval page, end to end -------------------------------------------------------------


def test_request_then_approve_in_the_browser_then_send(env, cli, server, page):
    link = requested_link(env, cli)
    page.goto(server.local(link))
    assert page.locator("h1").first.inner_text() == "Approve this bulletin?"
    assert page.get_by_text("Dear Margaret,").count() >= 1
    assert_accessible(page)
    save_screenshot(page, "approval-page")
    assert server.events() == [("request", COMMANDER, "email link", "")]  # GET records nothing
    page.get_by_role("button", name="Approve").click()
    page.wait_for_load_state()
    assert page.locator("h1").first.inner_text() == "Approved: thank you"
    assert_accessible(page)
    save_screenshot(page, "approval-approved")
    assert server.events()[-1] == ("approved", COMMANDER, "email link", "")
    cli("send", "eu-referendum", "--yes")
    send = json.loads(cli("status", "1", "--json").stdout)["sends"][0]
    assert send["approval"]["approvals"][0]["route"] == "email link"
    # The same link again: used.
    page.goto(server.local(link))
    assert page.locator("h1").first.inner_text() == "This approval link has been used"
    assert_accessible(page)


def test_ask_for_changes_records_the_comment_and_blocks_the_send(env, cli, server, page):
    link = requested_link(env, cli)
    page.goto(server.local(link))
    page.get_by_label("Or say what should change").fill("Add the Crimestoppers number.")
    page.get_by_role("button", name="Ask for changes").click()
    page.wait_for_load_state()
    assert page.locator("h1").first.inner_text() == "Your request for changes was sent back"
    assert server.events()[-1] == (
        "changes",
        COMMANDER,
        "email link",
        "Add the Crimestoppers number.",
    )
    refused = cli("send", "eu-referendum", "--yes", expect=1).stderr
    assert "asked for changes" in refused and "Add the Crimestoppers number." in refused
    history = cli("history", "eu-referendum").stdout
    assert 'changes asked for by commander@example.org (email link): "Add the Crimestoppers' in (
        history
    )


def test_an_approval_after_changes_were_asked_lets_it_go(env, cli, server):
    link = requested_link(env, cli)
    requests.post(server.local(link), data={"decision": "changes", "comment": "No."}, timeout=10)
    cli("send", "eu-referendum", "--yes", expect=1)
    cli("approve", "eu-referendum", "--as", DEPUTY)
    cli("send", "eu-referendum", "--yes")


def test_ask_for_changes_needs_a_comment(env, cli, server):
    link = requested_link(env, cli)
    answer = requests.post(server.local(link), data={"decision": "changes"}, timeout=10)
    assert answer.status_code == 400 and "Say what should change" in answer.text
    assert [e[0] for e in server.events()] == ["request"]


# --- refused links -----------------------------------------------------------------------------


def get_and_post(server, link: str) -> tuple[requests.Response, requests.Response]:
    got = requests.get(server.local(link), timeout=10)
    posted = requests.post(server.local(link), data={"decision": "approve"}, timeout=10)
    return got, posted


def test_a_forged_link_is_refused(env, cli, server):
    link = requested_link(env, cli)
    token = token_of(link)
    forged = link.replace(token, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    for answer in get_and_post(server, forged):
        assert answer.status_code == 403 and "not valid" in answer.text
    wrong_request = link.replace(f"t={token.split('.')[0]}.", "t=99.")
    for answer in get_and_post(server, wrong_request):
        assert answer.status_code == 403
    unsubscribe = f"{PUBLIC}/approve?t={unsubscribe_token(SECRET, 1, 1, COMMANDER)}"
    assert requests.get(server.local(unsubscribe), timeout=10).status_code == 403
    assert [e[0] for e in server.events()] == ["request"]


def test_an_expired_link_is_refused(env, cli, server):
    settings = load_settings(env)
    checked = check_message("eu-referendum", settings)
    asked = approval.request(
        checked, settings, COMMANDER, now=datetime.now(UTC) - timedelta(days=8)
    )
    for answer in get_and_post(server, asked.url):
        assert answer.status_code == 410 and "has expired" in answer.text
    assert [e[0] for e in server.events()] == ["request"]


def test_a_link_for_another_version_is_refused(env, cli, server):
    link = requested_link(env, cli)
    edit_one_word(env)
    for answer in get_and_post(server, link):
        assert answer.status_code == 410 and "has changed since the link was sent" in answer.text
    assert [e[0] for e in server.events()] == ["request"]


def test_a_link_for_an_approver_no_longer_listed_is_refused(env, cli, server, monkeypatch):
    link = requested_link(env, cli, DEPUTY)
    monkeypatch.setenv("BULLETIN_APPROVERS", COMMANDER)
    for answer in get_and_post(server, link):
        assert answer.status_code == 403 and "not an approver any more" in answer.text
    assert [e[0] for e in server.events()] == ["request"]


def test_a_used_link_cannot_be_replayed(env, cli, server):
    link = requested_link(env, cli)
    first = requests.post(server.local(link), data={"decision": "approve"}, timeout=10)
    assert first.status_code == 200
    again = requests.post(
        server.local(link), data={"decision": "changes", "comment": "x"}, timeout=10
    )
    assert again.status_code == 410 and "has been used" in again.text
    assert [e[0] for e in server.events()] == ["request", "approved"]


def test_opening_a_link_many_times_records_nothing(env, cli, server):
    link = requested_link(env, cli)
    for _ in range(3):
        assert requests.get(server.local(link), timeout=10).status_code == 200
        assert requests.head(server.local(link), timeout=10).status_code == 200
    assert [e[0] for e in server.events()] == ["request"]
    cli("send", "eu-referendum", "--yes", expect=1)


def test_refusal_pages_are_accessible(env, cli, server, page):
    page.goto(server.url + "/approve?t=1.2.AAAAAAAAAAAAAAAAAAAAAA")
    assert page.locator("h1").first.inner_text() == "This approval link is not valid"
    assert_accessible(page)


# --- bulletin run ------------------------------------------------------------------------------


def test_run_skips_an_unapproved_message_once_then_sends_it_after_approval(env, cli):
    path = env / MESSAGE
    path.write_text(path.read_text().replace("reference:", "send_at: 2016-07-04T07:30\nreference:"))
    now = "2016-07-04T09:00"
    first = cli("run", "--now", now, expect=1)
    assert "due but not sent" in first.stderr and "needs 1 approval(s)" in first.stderr
    second = cli("run", "--now", now, expect=1)
    assert second.stdout == "" and second.stderr == ""  # the notice is printed once
    cli("approve", "eu-referendum", "--as", COMMANDER)
    sent = cli("run", "--now", "2016-07-04T09:05")
    assert "Sent messages/eu-referendum.md (send #1): 34 written to the outbox" in sent.stdout
    assert "in person" in cli("status", "1").stdout


def test_history_lists_versions_requests_approvals_and_sends_in_order(env, cli):
    cli("approve", "eu-referendum", "--request", COMMANDER)
    cli("approve", "eu-referendum", "--as", COMMANDER)
    cli("send", "eu-referendum", "--yes")
    edit_one_word(env)
    cli("approve", "eu-referendum", "--as", DEPUTY)
    lines = cli("history", "eu-referendum").stdout.splitlines()
    kinds = [re.sub(r"^\s*\S+ \S+ \S+\s+", "", line).split(" ")[0] for line in lines]
    assert kinds == ["version", "approval", "approved", "send", "version", "approved"]


def test_the_report_shows_who_approved_the_send(env, cli):
    cli("approve", "eu-referendum", "--as", f"Ada Commander <{COMMANDER}>")
    cli("send", "eu-referendum", "--yes")
    cli("report", "1", "-o", "report.html")
    page = (env / "report.html").read_text(encoding="utf-8")
    assert "Approved: by Ada Commander &lt;commander@example.org&gt;" in page
    assert "in person at the command line" in page and "Version:" in page


def test_approve_takes_exactly_one_of_request_or_as(env, cli):
    assert "give one of --request" in cli("approve", "eu-referendum", expect=2).stderr
    both = cli("approve", "eu-referendum", "--request", COMMANDER, "--as", COMMANDER, expect=2)
    assert "give one of --request" in both.stderr


def test_a_dry_run_warns_about_missing_approvals_and_creates_no_database(env, cli):
    result = cli("send", "eu-referendum", "--dry-run")
    assert "warning: messages/eu-referendum.md (version" in result.stderr
    assert "Dry run: rendered 34 message(s)" in result.stdout
    assert not (env / "bulletin.db").exists()
