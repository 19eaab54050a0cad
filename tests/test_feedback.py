"""Readers answer "Was this useful?" (issue 18): the question in every email, the signed
links, the page that records nothing until its button is pressed, the counts, the report, the
export and erasure.

Links come from real sends (the outbox's .eml files); the web app is the real one under
uvicorn on 127.0.0.1; the click-through runs in headless Chromium.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import stat
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from accessibility import assert_accessible
from browser import save_screenshot

from bulletin import feedback, unsubscribe
from bulletin.config import load_settings
from bulletin.message import load_message
from bulletin.web.webhook import make_server

SECRET = "feedback-test-secret-0123456789abcdef"
PUBLIC = "https://bulletin.example.org"
FIRST = "margaret.okafor@example.org"
SECOND = "david.oneill@example.com"
PAYLOADS = (
    "<script>alert('x')</script> & <img src=x onerror=alert(1)>",
    '=HYPERLINK("http://evil.example.com","click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", SECRET)
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", PUBLIC)


def mails(workdir: Path, send_id: int = 1) -> dict[str, object]:
    """Address → its parsed .eml from the outbox."""
    found = {}
    for path in sorted((workdir / "outbox").glob(f"{send_id}-*.eml")):
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        found[mail["To"].addresses[0].addr_spec] = mail
    return found


def feedback_links(mail) -> dict[str, str]:
    """answer → the HTML part's link for it."""
    html = mail.get_body(("html",)).get_content()
    hrefs = re.findall(r'href="([^"]*/feedback\?[^"]*)"', html)
    links = {}
    for href in hrefs:
        link = href.replace("&amp;", "&")
        links[parse_qs(urlsplit(link).query)["a"][0]] = link
    return links


@pytest.fixture
def sent(workdir, cli, env) -> dict[str, dict[str, str]]:
    """The example letter sent to the outbox: address → {answer: link}."""
    cli("send", "eu-referendum", "--yes")
    return {address: feedback_links(mail) for address, mail in mails(workdir).items()}


class Server:
    def __init__(self, workdir: Path) -> None:
        self.log: list[str] = []
        self.server = make_server(
            load_settings(workdir), "127.0.0.1", 0, insecure=True, log=self.log.append
        )
        self.url = self.server.url
        self.db = workdir / "bulletin.db"
        self.server.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def local(self, link: str) -> str:
        """The public link, aimed at this server instead of the reverse proxy."""
        return self.url + link.removeprefix(PUBLIC)

    def answers(self) -> list[tuple]:
        db = sqlite3.connect(self.db)
        try:
            return db.execute(
                "SELECT delivery_id, answer, comment FROM feedback ORDER BY id"
            ).fetchall()
        finally:
            db.close()

    def post(self, link: str, answer: str, comment: str = "", **data) -> requests.Response:
        token = token_of(link)
        fields = {"t": token, "answer": answer, "comment": comment, **data}
        return requests.post(f"{self.url}/feedback", params={"t": token}, data=fields, timeout=10)


@pytest.fixture
def server(sent, workdir):
    running = Server(workdir)
    yield running
    running.stop()


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["t"][0]


# --- what every email carries ------------------------------------------------------------------


def test_every_email_asks_with_three_personal_signed_links(sent, workdir):
    everyone = mails(workdir)
    assert len(everyone) == len(sent) > 2
    tokens = set()
    for address, mail in everyone.items():
        links = sent[address]
        assert set(links) == {"useful", "not_useful", "concern"}
        (token,) = {token_of(link) for link in links.values()}
        tokens.add(token)
        assert all(link.startswith(f"{PUBLIC}/feedback?t=") for link in links.values())
        assert feedback.verify_token(SECRET, token, address)
        assert not feedback.verify_token(SECRET, token, "someone.else@example.org")
        # A feedback token is not an unsubscribe token, nor the other way round.
        assert not unsubscribe.verify_token(SECRET, token, address)
        unsubscribe_token = token_of(mail["List-Unsubscribe"].strip("<>"))
        assert not feedback.verify_token(SECRET, unsubscribe_token, address)
        html = mail.get_body(("html",)).get_content()
        assert "Was this message useful?" in html
        assert html.index("Was this message useful?") < html.index("Reference:")  # above the footer
        for words in ("&gt;Useful</a>", ">Not useful</a>", ">I have a concern</a>"):
            assert words.replace("&gt;", ">") in html
        text = mail.get_body(("plain",)).get_content()
        for answer, words in (
            ("useful", "Useful"),
            ("not_useful", "Not useful"),
            ("concern", "I have a concern"),
        ):
            assert f"- {words}: {links[answer]}" in text
    assert len(tokens) == len(everyone)  # one per delivery


def set_feedback(workdir: Path, front: str) -> None:
    path = workdir / "messages" / "eu-referendum.md"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("\n---\n", f"\n{front}\n---\n", 1), encoding="utf-8")


def test_feedback_false_leaves_the_question_out(workdir, cli, env):
    set_feedback(workdir, "feedback: false")
    cli("send", "eu-referendum", "--yes")
    for mail in mails(workdir).values():
        assert "/feedback?" not in mail.get_body(("html",)).get_content()
        assert "/feedback?" not in mail.get_body(("plain",)).get_content()
        assert "useful" not in mail.get_body(("plain",)).get_content()


def test_the_question_and_labels_are_set_per_message(workdir, cli, env):
    set_feedback(
        workdir,
        "feedback:\n  question: Did this help you feel safer?\n  useful: Yes, it helped\n"
        "  concern: I am worried",
    )
    cli("send", "eu-referendum", "--yes")
    mail = mails(workdir)[FIRST]
    html, text = (mail.get_body((kind,)).get_content() for kind in ("html", "plain"))
    assert "Did this help you feel safer?" in html and "Did this help you feel safer?" in text
    assert ">Yes, it helped</a>" in html and ">Not useful</a>" in html
    assert ">I am worried</a>" in html
    assert "- Yes, it helped: " in text
    running = Server(workdir)  # the page uses the same words while the message is unchanged
    try:
        page = requests.get(running.local(feedback_links(mail)["concern"]), timeout=10).text
    finally:
        running.stop()
    assert "<h1>Did this help you feel safer?</h1>" in page
    assert "Yes, it helped</label>" in page and "I am worried</label>" in page


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ("feedback: Is this clear?", feedback.Question("Is this clear?")),
        ("feedback: true", feedback.DEFAULT),
        ("feedback: false", None),
        ("", feedback.DEFAULT),
    ],
)
def test_front_matter_feedback_values(workdir, front, expected):
    set_feedback(workdir, front)
    message, problems = load_message(workdir / "messages" / "eu-referendum.md", workdir)
    assert problems == []
    assert message.feedback == expected


@pytest.mark.parametrize(
    "front",
    ["feedback: [a, b]", "feedback:\n  question: Fine?\n  maybe: Perhaps", "feedback: {useful: 3}"],
)
def test_a_wrong_feedback_value_is_one_problem_naming_the_line(workdir, cli, front):
    set_feedback(workdir, front)
    result = cli("check", "eu-referendum", expect=1)
    assert re.search(r"messages/eu-referendum\.md:\d+: feedback", result.stderr), result.stderr


# --- the page -------------------------------------------------------------------------------------


def test_click_through_in_a_browser_from_an_outbox_link(server, sent, page, cli):
    link = server.local(sent[FIRST]["concern"])
    page.goto(link)
    assert page.title() == "Was this message useful?"
    assert page.locator("input[value=concern]").is_checked()
    assert not page.locator("input[value=useful]").is_checked()
    assert_accessible(page)
    assert server.answers() == []  # opening the page records nothing
    page.get_by_label("Useful", exact=True).check()  # change of mind before sending
    page.get_by_label("Comment (optional)").fill("Clear and reassuring.\nThank you.")
    page.get_by_role("button", name="Send my answer").click()
    page.wait_for_load_state()
    assert page.title() == "Thank you for your feedback"
    assert "Useful" in page.locator("main").inner_text()
    assert_accessible(page)
    save_screenshot(page, "feedback-thanks")
    assert page.console_errors == []
    assert server.answers() == [(1, "useful", "Clear and reassuring.\nThank you.")]

    # Opened again, the page shows the earlier answer and comment; sending replaces them.
    page.goto(server.local(sent[FIRST]["not_useful"]))
    assert "You answered Useful before" in page.locator("main").inner_text()
    assert page.locator("input[value=not_useful]").is_checked()
    assert page.get_by_label("Comment (optional)").input_value() == (
        "Clear and reassuring.\nThank you."
    )
    page.set_viewport_size({"width": 375, "height": 800})
    save_screenshot(page, "feedback-page-phone")
    assert_accessible(page)
    page.get_by_label("Comment (optional)").fill("")
    page.get_by_role("button", name="Send my answer").click()
    page.wait_for_load_state()
    assert server.answers() == [(1, "not_useful", "")]

    status = cli("status", "1").stdout
    assert "Feedback: 0 useful · 1 not useful · 0 concern" in status
    counts = json.loads(cli("status", "1", "--json").stdout)["sends"][0]["feedback"]
    assert counts == {"useful": 0, "not_useful": 1, "concern": 0}


def test_get_and_head_never_record(server, sent):
    for answer, link in sent[FIRST].items():
        for method in ("GET", "HEAD"):
            response = requests.request(method, server.local(link), timeout=10)
            assert response.status_code == 200, answer
    assert server.answers() == []
    page = requests.get(server.local(sent[FIRST]["useful"]), timeout=10)
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert not [line for line in server.log if token_of(sent[FIRST]["useful"]) in line]


def bad_tokens(sent, outbox_mail) -> dict[str, str]:
    good = token_of(sent[FIRST]["useful"])
    send, delivery, signature = good.split(".")
    other = token_of(sent[SECOND]["useful"])
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return {
        "forged": feedback.make_token("not-our-secret", int(send), int(delivery), FIRST),
        "tampered signature": f"{send}.{delivery}.{flipped}",
        "tampered delivery": f"{send}.{other.split('.')[1]}.{signature}",
        "another send": f"{int(send) + 1}.{delivery}.{signature}",
        "another recipient's": feedback.make_token(SECRET, int(send), int(delivery), SECOND),
        "an unsubscribe token": token_of(outbox_mail["List-Unsubscribe"].strip("<>")),
        "garbage": "<script>alert(1)</script>",
        "empty": "",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "forged",
        "tampered signature",
        "tampered delivery",
        "another send",
        "another recipient's",
        "an unsubscribe token",
        "garbage",
        "empty",
    ],
)
def test_bad_tokens_are_refused_and_record_nothing(server, sent, workdir, kind):
    token = bad_tokens(sent, mails(workdir)[FIRST])[kind]
    url = f"{server.url}/feedback"
    got = requests.get(url, params={"t": token, "a": "useful"}, timeout=10)
    posted = requests.post(
        url, params={"t": token}, data={"t": token, "answer": "useful"}, timeout=10
    )
    assert (got.status_code, posted.status_code) == (400, 400)
    assert "This feedback link is not valid" in posted.text
    assert "<script>alert" not in got.text
    assert server.answers() == []


def test_a_post_without_an_answer_or_with_a_long_comment_is_refused(server, sent):
    link = sent[FIRST]["useful"]
    refused = server.post(link, "")
    assert refused.status_code == 400 and "Choose one of the three answers" in refused.text
    refused = server.post(link, "maybe")
    assert refused.status_code == 400
    too_long = server.post(link, "useful", "x" * (feedback.MAX_COMMENT + 1))
    assert too_long.status_code == 400 and "please shorten it to 2,000" in too_long.text
    assert server.answers() == []
    assert server.post(link, "useful", "x" * feedback.MAX_COMMENT).status_code == 200
    assert server.answers()[0][2] == "x" * feedback.MAX_COMMENT


def test_one_answer_per_recipient_per_send(server, sent, cli):
    assert server.post(sent[FIRST]["useful"], "useful").status_code == 200
    assert server.post(sent[FIRST]["useful"], "concern", "Changed my mind").status_code == 200
    assert server.post(sent[SECOND]["useful"], "useful").status_code == 200
    assert server.answers() == [(1, "concern", "Changed my mind"), (2, "useful", "")]
    counts = json.loads(cli("status", "--json").stdout)["sends"][0]["feedback"]
    assert counts == {"useful": 1, "not_useful": 0, "concern": 1}


def test_without_a_secret_the_page_is_unavailable_not_a_bad_link(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    running = Server(workdir)
    try:
        response = requests.get(f"{running.url}/feedback", params={"t": "1.1.x"}, timeout=10)
    finally:
        running.stop()
    assert response.status_code == 503


# --- hostile comments: escaped on every page, neutralised in the export -------------------------


def test_html_and_formula_comments_are_escaped_and_neutralised(server, sent, workdir, cli, page):
    links = [sent[address]["concern"] for address in list(sent)[: len(PAYLOADS)]]
    for link, payload in zip(links, PAYLOADS, strict=True):
        thanks = server.post(link, "concern", payload)
        assert thanks.status_code == 200
        assert "<script>" not in thanks.text and "<img" not in thanks.text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in thanks.text or (
            payload != PAYLOADS[0]
        )
    stored = [comment for _, _, comment in server.answers()]
    assert stored == list(PAYLOADS)  # stored as given

    # The page itself, opened again in a browser: the text shows, nothing runs.
    page.goto(server.local(links[0]))
    assert page.get_by_label("Comment (optional)").input_value() == PAYLOADS[0]
    assert page.locator("main img").count() == 0
    assert page.console_errors == []

    cli("report", "1", "-o", "report.html")
    report = (workdir / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in report and "<img" not in report
    assert "&lt;img src=x onerror=alert(1)&gt;" in report
    page.goto((workdir / "report.html").as_uri())
    section = page.locator("section[aria-labelledby=feedback]")
    comments = section.locator(".comment-text").all_inner_texts()
    assert comments == list(reversed(PAYLOADS))  # newest first
    assert "100.0%" in section.inner_text()  # every answer is a concern
    assert page.locator("img").count() == 0
    assert_accessible(page)
    save_screenshot(page, "feedback-report")

    cli("feedback", "1", "--csv", "feedback.csv")
    path = workdir / "feedback.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    assert [r["comment"] for r in rows] == ["'" + p if p[0] in "=+-@" else p for p in PAYLOADS]
    assert all(not r["comment"].startswith(("=", "+", "-", "@")) for r in rows)
    assert {r["answer"] for r in rows} == {"concern"}
    assert rows[0]["email"] == next(iter(sent))

    shown = cli("feedback", "1").stdout
    assert "I have a concern" in shown and PAYLOADS[1] in shown


def test_export_replaces_an_existing_file_as_0600(server, sent, workdir, cli):
    server.post(sent[FIRST]["useful"], "useful")
    path = workdir / "old.csv"
    path.write_text("old", encoding="utf-8")
    path.chmod(0o644)
    cli("feedback", "eu-referendum", "--csv", "old.csv")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "useful" in path.read_text(encoding="utf-8")


def test_a_terminal_never_gets_raw_escapes(server, sent, cli):
    server.post(sent[FIRST]["useful"], "useful", "hello \x1b[2J world")
    shown = cli("feedback", "1").stdout
    assert "\x1b" not in shown and "hello \\x1b[2J world" in shown


# --- data protection ---------------------------------------------------------------------------


def test_forget_removes_their_answers_and_comments(server, sent, cli, workdir):
    server.post(sent[FIRST]["concern"], "concern", "My neighbour's name is in here")
    server.post(sent[SECOND]["useful"], "useful")
    result = cli("forget", FIRST)
    assert "Deleted their 1 feedback answer(s) and comment(s)." in result.stdout
    assert server.answers() == [(2, "useful", "")]
    raw = b"".join(p.read_bytes() for p in workdir.glob("bulletin.db*"))
    assert b"My neighbour" not in raw
    # Their old link no longer works: the delivery no longer names them.
    assert server.post(sent[FIRST]["useful"], "useful").status_code == 400


def test_purge_removes_old_comments_and_keeps_the_counts(server, sent, cli, workdir):
    server.post(sent[FIRST]["concern"], "concern", "An old worry")
    server.post(sent[SECOND]["useful"], "useful", "Helpful")
    db = sqlite3.connect(workdir / "bulletin.db")
    with db:
        db.execute("UPDATE sends SET created_at = '2015-01-01T00:00:00+00:00'")
        db.execute("UPDATE feedback SET commented_at = '2015-01-02T00:00:00+00:00'")
    db.close()
    dry = cli("purge", "--older-than", "400d", "--dry-run").stdout
    assert "2 feedback comment(s)" in dry
    assert [c for _, _, c in server.answers()] == ["An old worry", "Helpful"]
    done = cli("purge", "--older-than", "400d").stdout
    assert "2 feedback comment(s)" in done
    assert [(a, c) for _, a, c in server.answers()] == [("concern", ""), ("useful", "")]
    counts = json.loads(cli("status", "1", "--json").stdout)["sends"][0]["feedback"]
    assert counts == {"useful": 1, "not_useful": 0, "concern": 1}
    raw = b"".join(p.read_bytes() for p in workdir.glob("bulletin.db*"))
    assert b"An old worry" not in raw
    cli("report", "1", "-o", "report.html")
    assert "No comments." in (workdir / "report.html").read_text(encoding="utf-8")


def test_purge_keeps_recent_comments(server, sent, cli):
    server.post(sent[FIRST]["useful"], "useful", "Recent")
    assert "Nothing to purge" in cli("purge", "--older-than", "400d").stdout
    assert server.answers() == [(1, "useful", "Recent")]
