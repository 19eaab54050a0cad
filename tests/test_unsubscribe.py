"""One-click unsubscribe (RFC 8058): the headers and links every email carries, the GET page
that changes nothing, the POST that suppresses at once, and tokens that cannot be forged.

Tokens come from real sends (the outbox's .eml files, the SMTP sink); the server is real; the
tracking database is SQLite and, again, PostgreSQL (the `backend` fixture).
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from backends import Backend, as_backend

from bulletin.config import load_settings
from bulletin.unsubscribe import make_token, verify_token
from bulletin.web.webhook import make_server

SECRET = "unsubscribe-test-secret-0123456789"
PUBLIC = "https://bulletin.example.org"


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", SECRET)
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", PUBLIC)


@pytest.fixture
def outbox(backend, workdir, cli, env) -> dict[str, str]:
    """The letter sent to the outbox; address → its List-Unsubscribe URL."""
    cli("send", "eu-referendum", "--yes")
    links = {}
    for path in sorted((workdir / "outbox").glob("1-*.eml")):
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        links[mail["To"].addresses[0].addr_spec] = mail["List-Unsubscribe"].strip("<>")
    return links


class Server:
    def __init__(self, workdir: Path, db: Backend) -> None:
        self.log: list[str] = []
        self.server = make_server(
            load_settings(workdir), "127.0.0.1", 0, insecure=True, log=self.log.append
        )
        self.url = self.server.url
        self.db = db
        self.server.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def local(self, link: str) -> str:
        """The public link, aimed at this server instead of the reverse proxy."""
        return self.url + link.removeprefix(PUBLIC)

    def rows(self, sql: str, **params) -> list[tuple]:
        return self.db.tuples(sql, **params)

    def suppressed(self) -> list[tuple]:
        return self.rows("SELECT email, reason, source FROM suppressions")

    def state(self, email: str) -> str:
        return self.rows(
            "SELECT state FROM deliveries WHERE email = :email ORDER BY id DESC", email=email
        )[0][0]


@pytest.fixture
def server(outbox, workdir, backend):
    running = Server(workdir, backend)
    yield running
    running.stop()


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["t"][0]


FIRST = "margaret.okafor@example.org"
SECOND = "david.oneill@example.com"


# --- what every email carries ------------------------------------------------------------------


def check_mail(mail) -> None:
    address = mail["To"].addresses[0].addr_spec
    header = mail["List-Unsubscribe"]
    assert re.fullmatch(
        rf"<{re.escape(PUBLIC)}/unsubscribe\?t=[0-9]+\.[0-9]+\.[\w-]{{22}}>", header
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = header.strip("<>")
    assert verify_token(SECRET, token_of(link), address)
    assert not verify_token(SECRET, token_of(link), "someone.else@example.org")
    assert f'href="{link}"' in mail.get_body(("html",)).get_content()
    assert link in mail.get_body(("plain",)).get_content()


def test_outbox_emails_carry_headers_and_a_personal_link(outbox, workdir):
    files = sorted((workdir / "outbox").glob("1-*.eml"))
    assert len(files) == 34 and len(set(outbox.values())) == 34
    for path in files:
        check_mail(message_from_bytes(path.read_bytes(), policy=policy.default))


def test_smtp_emails_carry_headers_and_a_personal_link(workdir, cli, smtp_env, monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", SECRET)
    cli("send", "eu-referendum", "--yes")
    mails = smtp_env.parsed()
    assert len(mails) == 34
    for mail in mails:
        check_mail(mail)


# --- GET: a page, no change ----------------------------------------------------------------------


def test_get_shows_a_confirmation_page_and_changes_nothing(server, outbox):
    link = server.local(outbox[FIRST])
    response = requests.get(link, timeout=10, allow_redirects=False)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    assert '<html lang="en">' in page and "<h1>Unsubscribe from these emails?</h1>" in page
    assert '<form method="post"' in page and '<button type="submit">Unsubscribe</button>' in page
    assert "m•••••r@example.org" in page and FIRST not in page
    assert "Was this email forwarded to you?" in page and "do not press the button" in page
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert server.suppressed() == [] and server.state(FIRST) == "accepted"
    head = requests.head(link, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert server.suppressed() == []
    assert not any(token_of(outbox[FIRST]) in line for line in server.log)


def test_the_pages_button_unsubscribes(server, outbox):
    page = requests.get(server.local(outbox[FIRST]), timeout=10).text
    action = re.search(r'action="([^"]+)"', page).group(1).replace("&amp;", "&")
    hidden = re.search(r'name="t" value="([^"]+)"', page).group(1)
    assert action == f"?t={token_of(outbox[FIRST])}" and hidden == token_of(outbox[FIRST])
    response = requests.post(f"{server.url}/unsubscribe", data={"t": hidden}, timeout=10)
    assert response.status_code == 200
    assert server.suppressed() == [(FIRST, "unsubscribed via link", "unsubscribe")]


# --- POST: one click -----------------------------------------------------------------------------


def test_one_click_post_suppresses_at_once_without_redirect_or_cookie(server, outbox):
    response = requests.post(
        server.local(outbox[FIRST]),
        data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers and "Location" not in response.headers
    assert "You have been unsubscribed" in response.text
    assert server.suppressed() == [(FIRST, "unsubscribed via link", "unsubscribe")]
    assert server.state(FIRST) == "unsubscribed"
    assert server.state(SECOND) == "accepted"
    # Again (a mail client retrying): still 200, nothing doubled.
    assert (
        requests.post(
            server.local(outbox[FIRST]), data="List-Unsubscribe=One-Click", timeout=10
        ).status_code
        == 200
    )
    assert server.rows("SELECT COUNT(*) FROM events WHERE event = 'unsubscribe'") == [(1,)]
    assert "You are unsubscribed" in requests.get(server.local(outbox[FIRST]), timeout=10).text


def test_one_click_post_as_multipart(server, outbox):
    response = requests.post(
        server.local(outbox[SECOND]), files={"List-Unsubscribe": (None, "One-Click")}, timeout=10
    )
    assert response.status_code == 200
    assert server.suppressed() == [(SECOND, "unsubscribed via link", "unsubscribe")]


def test_multipart_form_carrying_the_token(server, outbox):
    response = requests.post(
        f"{server.url}/unsubscribe", files={"t": (None, token_of(outbox[SECOND]))}, timeout=10
    )
    assert response.status_code == 200
    assert server.state(SECOND) == "unsubscribed"


def test_a_follow_up_send_skips_the_unsubscribed_address(server, outbox, workdir, cli):
    requests.post(server.local(outbox[FIRST]), data="List-Unsubscribe=One-Click", timeout=10)
    message = workdir / "messages" / "eu-referendum.md"
    message.write_text(message.read_text() + "\nP.S. Thank you for sharing this.\n")
    result = cli("send", "eu-referendum", "--yes", "--new-send")
    assert "1 suppressed" in result.stderr
    second = [
        message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in (workdir / "outbox").glob("2-*.eml")
    ]
    assert len(second) == 33
    assert FIRST not in {m["To"].addresses[0].addr_spec for m in second}


# --- tokens that must not work -------------------------------------------------------------------


def bad_tokens(outbox: dict[str, str]) -> dict[str, str]:
    good = token_of(outbox[FIRST])
    send, delivery, signature = good.split(".")
    other = token_of(outbox[SECOND])
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return {
        "forged signature": f"{send}.{delivery}.{flipped}",
        "another delivery's signature": f"{send}.{other.split('.')[1]}.{signature}",
        "another send": f"{int(send) + 1}.{delivery}.{signature}",
        "another secret": make_token("not-our-secret", int(send), int(delivery), FIRST),
        "made for another address": make_token(SECRET, int(send), int(delivery), SECOND),
        "no such delivery": make_token(SECRET, int(send), 99999, FIRST),
        "garbage": "<script>alert(1)</script>",
        "empty": "",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "forged signature",
        "another delivery's signature",
        "another send",
        "another secret",
        "made for another address",
        "no such delivery",
        "garbage",
        "empty",
    ],
)
def test_bad_tokens_are_400_and_change_nothing(server, outbox, kind):
    token = bad_tokens(outbox)[kind]
    url = f"{server.url}/unsubscribe"
    got = requests.get(url, params={"t": token}, timeout=10)
    posted = requests.post(url, params={"t": token}, data="List-Unsubscribe=One-Click", timeout=10)
    assert (got.status_code, posted.status_code) == (400, 400)
    assert "This unsubscribe link is not valid" in posted.text
    assert "<script>" not in got.text
    assert server.suppressed() == []
    assert {s for (s,) in server.rows("SELECT DISTINCT state FROM deliveries")} == {"accepted"}


def test_without_a_token_post_is_400(server):
    assert requests.post(f"{server.url}/unsubscribe", timeout=10).status_code == 400


def test_everything_shown_is_escaped(workdir, cli, env, monkeypatch):
    monkeypatch.setenv("BULLETIN_ORGANISATION", "<script>alert('x')</script> & Co")
    cli("send", "eu-referendum", "--yes")
    running = Server(workdir, as_backend(workdir / "bulletin.db"))
    try:
        page = requests.get(
            f"{running.url}/unsubscribe", params={"t": make_token(SECRET, 1, 1, FIRST)}, timeout=10
        ).text
    finally:
        running.stop()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; Co" in page
    assert "<script>" not in page


def test_without_a_secret_unsubscribe_is_unavailable_not_a_bad_link(workdir, cli, monkeypatch):
    cli("send", "eu-referendum", "--yes")  # the outbox works without a secret
    running = Server(workdir, as_backend(workdir / "bulletin.db"))
    try:
        response = requests.get(f"{running.url}/unsubscribe", params={"t": "1.1.x"}, timeout=10)
    finally:
        running.stop()
    assert response.status_code == 503
