"""Issue 12: what an adversarial review broke, one regression test (or a few) per finding.

Each test names its finding by number (`test_12_1_…` is finding 1 of issue 12); the rows in
tests/reliability/README.md point here.
"""

from __future__ import annotations

import csv
import json
import re
from email import message_from_bytes, policy
from html import unescape
from pathlib import Path

import pytest

ZOE = "Zoë =?utf-8?b?DQpCY2M6IGV2aWxAZXZpbC5leGFtcGxl?="  # decodes to "\r\nBcc: evil@…"
FROM = "Bromley Police <bromley.neighbourhoods@example.org>"


def write_contacts(workdir: Path, rows: list[dict[str, str]]) -> None:
    for old in (workdir / "contacts").glob("*.csv"):
        old.unlink()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (workdir / "contacts" / "list.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def write_message(workdir: Path, name: str, body: str, **front: str) -> str:
    front = {"subject": "Hello", "from": FROM, **front}
    head = "".join(f"{k}: {v!r}\n".replace("'", '"', 2) for k, v in front.items())
    (workdir / "messages" / f"{name}.md").write_text(f"---\n{head}---\n{body}\n", "utf-8")
    return name


def yaml_message(workdir: Path, name: str, text: str) -> str:
    (workdir / "messages" / f"{name}.md").write_text(text, encoding="utf-8")
    return name


# --- 1. header injection through RFC 2047 encoded words ---------------------------------------

PERSONAL_SUBJECT = f"""\
---
subject: "{{{{ first_name }}}}, key messages from the Borough Commander"
from: "{FROM}"
public: false
---
Dear {{{{ first_name }}}},
"""


def assert_headers_intact(raw: bytes) -> None:
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    names = [line.split(b":", 1)[0].lower() for line in head.split(b"\n") if line[:1] not in b" \t"]
    assert b"bcc" not in names and b"reply-to" not in names and b"cc" not in names
    assert b"list-unsubscribe" in names and b"content-type" in names and b"mime-version" in names
    parsed = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
    assert parsed["Bcc"] is None and parsed["Reply-To"] is None
    assert str(parsed["Subject"]) == f"{ZOE}, key messages from the Borough Commander"
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["List-Unsubscribe"] is not None
    assert len(parsed.get_all("To")) == 1 and "zoe@example.org" in str(parsed["To"])


@pytest.fixture
def zoe(workdir: Path) -> str:
    write_contacts(workdir, [{"email": "zoe@example.org", "first_name": ZOE, "last_name": "Li"}])
    return yaml_message(workdir, "zoe", PERSONAL_SUBJECT)


def test_12_1_encoded_word_in_subject_outbox_and_preview(workdir, cli, zoe, monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", "s" * 40)
    monkeypatch.setenv("BULLETIN_PUBLIC_URL", "https://bulletin.example.org")
    cli("check", zoe)
    cli("send", zoe, "--yes", "--transport", "outbox")
    (eml,) = (workdir / "outbox").glob("*.eml")
    assert_headers_intact(eml.read_bytes())
    cli("preview", zoe, "--format", "eml", "-o", "zoe.eml")
    assert_headers_intact((workdir / "zoe.eml").read_bytes())


def test_12_1_encoded_word_in_subject_over_smtp(workdir, cli, zoe, smtp_env):
    cli("send", zoe, "--yes")
    ((_, recipients, raw),) = smtp_env.messages
    assert recipients == ["zoe@example.org"]
    assert_headers_intact(raw)


# --- 4. the final URL after substitution decides the scheme -----------------------------------

LINK_BODIES = {
    "empty base": "[p]({{ base }}{{ path }})",
    "split scheme": "[x](java{{ last_name }})",
    "leading space": '<a href=" {{ website }}">site</a>',
    "leading tab entity": '<a href="&#9;{{ website }}">site</a>',
    "image": '<img src=" {{ website }}" alt="logo">',
}


@pytest.mark.parametrize("body", LINK_BODIES.values(), ids=LINK_BODIES)
def test_12_4_no_javascript_url_after_substitution(workdir, cli, body):
    write_contacts(
        workdir,
        [
            {
                "email": "ada@example.org",
                "first_name": "Ada",
                "last_name": "script:alert(1)",
                "base": "",
                "path": "javascript:alert(1)",
                "website": "javascript:alert(document.domain)",
            },
            {
                "email": "bo@example.org",
                "first_name": "Bo",
                "last_name": "script-free",
                "base": "https://example.org",
                "path": "/news",
                "website": "https://example.org/",
            },
        ],
    )
    name = write_message(workdir, "links", body)
    result = cli("check", name, expect=1)
    assert "contacts/list.csv:2: a link would become" in result.stderr
    assert "list.csv:3" not in result.stderr
    html = cli("preview", name, "--format", "html", "--contact", "ada@example.org").stdout
    urls = [unescape(u) for u in re.findall(r'(?:href|src)="([^"]*)"', html)]
    assert urls and not [u for u in urls if "javascript" in re.sub(r"[\x00-\x20]", "", u)]
    good = cli("preview", name, "--format", "html", "--contact", "bo@example.org").stdout
    assert "https://example.org" in good or "javascript-free" in good  # safe values kept


# --- 2. forget leaves nothing behind -----------------------------------------------------------


def bounce(email: str, delivery: int, reason: str, event_id: str) -> dict:
    return {
        "event": "bounce",
        "type": "bounce",
        "email": email,
        "reason": reason,
        "timestamp": 1467360000,
        "sg_event_id": event_id,
        "bulletin_send": "1",
        "bulletin_delivery": str(delivery),
    }


def test_12_2_forget_scrubs_reasons_test_copies_and_tmp_files(workdir, cli, db_path):
    person = "margaret.okafor@example.org"
    cli("send", "eu-referendum", "--yes")
    cli("send", "eu-referendum", "--test", person, "--yes")
    outbox = workdir / "outbox"
    (outbox / "1-0000099.eml.tmp").write_bytes(b"To: Margaret <" + person.upper().encode() + b">")
    (outbox / "1-0000098.eml.tmp").write_bytes(b"To: someone.else@example.com\r\n")
    reason = f"550 5.1.1 <{person}>: Recipient address rejected"
    events = [bounce(person, 1, reason, "b-1")]
    (workdir / "events.json").write_text(json.dumps(events), encoding="utf-8")
    cli("events", "import", "events.json")
    assert person in cli("suppress", "list").stdout
    cli("forget", person)
    listed = cli("suppress", "list").stdout
    assert person not in listed.lower() and "(forgotten)" in listed
    leftovers = [p.name for p in outbox.iterdir() if person.encode() in p.read_bytes().lower()]
    assert not leftovers
    assert (outbox / "1-0000098.eml.tmp").exists()  # someone else's is not ours to delete
    assert person.encode() not in db_path.read_bytes().lower()


# --- 5. malformed events are counted and skipped, the rest applied ---------------------------


def test_12_5_lone_surrogates_wrong_types_and_deep_arrays_do_not_stop_an_import(
    workdir, cli, db_path
):
    cli("send", "eu-referendum", "--yes")
    good = [bounce("margaret.okafor@example.org", 1, "550 no such user", "good-1")]
    bad = [
        '{"event": "bounce", "email": "a\\udc80@example.org", "sg_event_id": "bad-1"}',
        '{"event": "delivered", "email": "x@example.org", "reason": "\\ud800", "x": 1}',
        '{"event": ["bounce"], "email": 5, "timestamp": "soon"}',
        '{"event": "open", "email": {"a": 1}, "timestamp": 1e308, "sg_message_id": 7}',
        '"just a string"',
    ]
    later = [bounce("david.oneill@example.com", 2, "550 gone", "good-2")]
    text = "[\n" + ",\n".join([json.dumps(good[0]), *bad, json.dumps(later[0])]) + "\n]\n"
    (workdir / "events.json").write_text(text, encoding="utf-8")
    result = cli("events", "import", "events.json", expect=1)
    assert "everything else was imported" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "example.org" not in result.stderr.replace("events.json", "")
    listed = cli("suppress", "list").stdout
    assert "margaret.okafor@example.org" in listed and "david.oneill@example.com" in listed
    deep = "[" * 200_000 + "]" * 200_000
    (workdir / "deep.json").write_text(deep + "\n" + json.dumps(later) + "\n", encoding="utf-8")
    result = cli("events", "import", "deep.json", expect=1)
    assert "nested too deeply" in result.stderr and "Traceback" not in result.stderr


def test_12_5_parse_event_refuses_surrogates_from_a_post():
    from bulletin.events import parse_event

    with pytest.raises(ValueError, match="surrogate"):
        parse_event({"event": "bounce", "email": "a\udc80@example.org"})
    with pytest.raises(ValueError, match="surrogate"):
        parse_event({"event": "bounce", "nested": {"k": ["\ud800"]}})
    assert parse_event({"event": "bounce", "email": "zoë@example.org 😀"}).kind == "bounce"


# --- 12. terminal escapes from outside never reach the operator ------------------------------


def test_12_12_suppress_list_strips_control_characters(workdir, cli):
    cli("send", "eu-referendum", "--yes")
    events = [bounce("priya.raman@example.net", 3, "550 \x1b[2J\x1b]0;pwned\x07 \x9b31m", "e1")]
    (workdir / "events.json").write_text(json.dumps(events), encoding="utf-8")
    cli("events", "import", "events.json")
    listed = cli("suppress", "list").stdout
    assert "priya.raman@example.net" in listed
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", listed)


# --- 7. the send lock follows the file, not the path ------------------------------------------


def test_12_7_a_symlinked_database_alias_takes_the_same_lock(workdir, cli, db_path):
    from bulletin.send import Busy, send_lock

    cli("send", "eu-referendum", "--dry-run")
    cli("suppress", "add", "nobody@example.org")  # creates bulletin.db
    alias = workdir / "alias.db"
    alias.symlink_to(db_path)
    with send_lock(db_path), pytest.raises(Busy), send_lock(alias):
        pass


def test_12_7_resend_unknown_through_an_alias_sends_no_second_copy(
    workdir, cli, db_path, smtp_env, monkeypatch
):
    from bulletin.send import send_lock

    cli("suppress", "add", "nobody@example.org")
    (workdir / "alias.db").symlink_to(db_path)
    with send_lock(db_path):  # a send running on bulletin.db …
        monkeypatch.setenv("BULLETIN_DB", "alias.db")
        result = cli("send", "eu-referendum", "--yes", "--resend-unknown", expect=4)
        assert "another bulletin send is running" in result.stderr
    assert smtp_env.messages == []
    cli("send", "eu-referendum", "--yes", "--resend-unknown")
    cli("send", "eu-referendum", "--yes", "--resend-unknown")
    sent = [to for _, recipients, _ in smtp_env.messages for to in recipients]
    assert sent and len(sent) == len(set(sent))


# --- 8. no planted symlinks followed; no shared outbox folder ---------------------------------


def test_12_8_outbox_and_notice_files_never_follow_a_planted_symlink(workdir, cli, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    outbox = workdir / "outbox"
    outbox.mkdir(mode=0o700)
    for n in range(1, 5):  # the names the next send will write, and their temporary files
        (outbox / f"1-{n:07d}.eml.tmp").symlink_to(victim)
    cli("send", "eu-referendum", "--yes")
    assert victim.read_text(encoding="utf-8") == "precious"
    assert not [p for p in outbox.iterdir() if p.is_symlink()]
    (workdir / "bulletin.db.lock").unlink()
    (workdir / "bulletin.db.lock").symlink_to(victim)
    result = cli("forget", "priya.raman@example.net", expect=1)  # takes the send lock
    assert "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert victim.read_text(encoding="utf-8") == "precious"


@pytest.mark.parametrize("kind", ["world-writable", "symlink"])
def test_12_8_an_unsafe_outbox_folder_is_refused(workdir, cli, tmp_path, kind):
    if kind == "symlink":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir(mode=0o700)
        (workdir / "outbox").symlink_to(elsewhere)
    else:
        (workdir / "outbox").mkdir()
        (workdir / "outbox").chmod(0o777)
    result = cli("send", "eu-referendum", "--yes", expect=1)
    error = result.stderr.strip().splitlines()[-1]  # after the plan's summary
    assert error.startswith("Error") or "outbox" in error
    assert ("chmod 700" if kind != "symlink" else "symbolic link") in error
    assert not list((workdir / "outbox").glob("*.eml"))


# --- 13. personal data written 0600 whatever the umask ----------------------------------------


def test_12_13_files_with_personal_data_are_0600_under_umask_022(workdir, cli, monkeypatch):
    import os

    old = os.umask(0o022)
    try:
        (workdir / "status.csv").write_text("old", encoding="utf-8")
        (workdir / "status.csv").chmod(0o644)  # an existing file is made private too
        monkeypatch.setenv("BULLETIN_LOG", "logs/bulletin.log")
        cli("send", "eu-referendum", "--yes")
        cli("run", "--now", "2030-01-01T09:00")
        cli("status", "--csv", "status.csv")
        cli("preview", "eu-referendum", "--format", "html", "-o", "preview.html")
        cli("print", "eu-referendum", "-o", "letters.pdf")
        cli("report", "eu-referendum", "-o", "report.html")
    finally:
        os.umask(old)
    for name in ("status.csv", "preview.html", "letters.pdf", "report.html", "logs/bulletin.log"):
        assert (workdir / name).stat().st_mode & 0o777 == 0o600, name


# --- 9. PDFs fetch nothing remote and embed no file outside the working folder ----------------


def test_12_9_pdf_rendering_fetches_no_url_and_no_outside_file(workdir, cli, tmp_path):
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    private = tmp_path / "private.png"
    private.write_bytes(PNG)
    (workdir / "logo.png").write_bytes(PNG)
    port = server.server_address[1]
    body = f"![b](http://127.0.0.1:{port}/x.png) ![a]({private}) ![ok](file://{private})"
    try:
        name = write_message(workdir, "images", body)
        result = cli("check", name, expect=1)
        assert "a remote resource" in result.stderr
        assert result.stderr.count("a file outside the working folder") == 1  # nh3 drops file:
        cli("preview", name, "--format", "pdf", "-o", "images.pdf")
    finally:
        server.shutdown()
    assert hits == []
    from pypdf import PdfReader

    reader = PdfReader(workdir / "images.pdf")
    images = [image for page in reader.pages for image in page.images]
    assert images == []
    local = write_message(workdir, "local", "![logo](logo.png)")
    cli("check", local)


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2264d"
    "0e0000000049454e44ae426082"
)


# --- 10. secrets' shape checked at load, never echoed -----------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("SENDGRID_API_KEY", "SG.canary-key\nX-Evil: 1", "SENDGRID_API_KEY contains"),
        ("SENDGRID_API_KEY", "SG.canary key", "SENDGRID_API_KEY contains"),
        ("SMTP_PASSWORD", "canary\r\npass", "SMTP_PASSWORD contains"),
        ("BULLETIN_SECRET", "canary-short", "shorter than 32"),
        ("BULLETIN_SECRET", "a-long-random-string", "placeholder"),
    ],
)
def test_12_10_malformed_secrets_are_refused_without_echo(workdir, cli, name, value, words):
    (workdir / ".env").write_text(f"{name}={json.dumps(value)}\n", encoding="utf-8")
    for args in (["send", "eu-referendum", "--yes"], ["check", "eu-referendum"]):
        result = cli(*args, expect=1)
        assert words in result.stderr and "canary" not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


# --- 11. private-use characters U+E000/U+E001 are refused, never crash ------------------------


@pytest.mark.parametrize("slot", ["\ue00042\ue001", "\ue0000\ue001", "\ue001\ue000"])
def test_12_11_private_use_slot_marks_are_refused_and_never_crash(workdir, cli, slot):
    name = write_message(workdir, "pua", f"Dear {{{{ first_name }}}},\n\nSee {slot} here.")
    result = cli("check", name, expect=1)
    assert "private-use character" in result.stderr and "pua.md:7" in result.stderr
    from bulletin.check import check_message
    from bulletin.config import load_settings

    checked = check_message(name, load_settings(workdir, environ={}))
    rendered = checked.compiled.render(checked.recipients[0], "https://example.org/u?t=SECRETURL")
    assert rendered.text.count("SECRETURL") == 1  # only in its own place, the footer
    assert "\ue000" not in rendered.html and "\ufffd" in rendered.text


# --- 14. sandboxed layouts; control characters refused in header-bound front matter -----------


def test_12_14_templates_are_sandboxed(workdir, cli):
    layout = workdir / "templates" / "email.html"
    payload = '{{ cycler.__init__.__globals__.os.popen("echo pwned-$((6*7))").read() }}'
    layout.write_text(payload + layout.read_text(encoding="utf-8"), encoding="utf-8")
    result = cli("check", "eu-referendum", expect=1)
    assert "template error" in result.stderr and "pwned-42" not in result.stderr
    preview = cli("preview", "eu-referendum", "--format", "html", expect=1)
    assert "pwned-42" not in preview.stdout


@pytest.mark.parametrize("key", ["subject", "from", "reply_to", "category", "reference"])
@pytest.mark.parametrize("char", ["\\0", "\\e", "\\x7f", "\\x9b"])
def test_12_14_control_characters_in_header_front_matter_are_refused(workdir, cli, key, char):
    values = {"subject": "Hello", "from": FROM, "reply_to": FROM, "category": "news"}
    values["reference"] = "BR-1"
    value = values[key]
    values[key] = value.replace("<", f"{char}<") if "<" in value else value + char
    head = "".join(f'{k}: "{v}"\n' for k, v in values.items())
    yaml_message(workdir, "ctl", f"---\n{head}---\nHello\n")
    result = cli("check", "ctl", expect=1)
    assert f"{key} contains a control character" in result.stderr or "must be" in result.stderr


# --- 14. relative contacts: globs stay inside the working folder ------------------------------


def test_12_14_relative_contact_globs_are_confined_to_the_working_folder(workdir, cli, tmp_path):
    other = tmp_path / "other" / "contacts"
    other.mkdir(parents=True)
    (other / "theirs.csv").write_text("email\nsomeone@example.com\n", encoding="utf-8")
    name = write_message(workdir, "escape", "Hello", contacts=["../other/contacts/*.csv"])
    result = cli("check", name, expect=1)
    assert "names files outside the working folder" in result.stderr
    (workdir / "contacts" / "link.csv").symlink_to(other / "theirs.csv")
    assert "outside the working folder" in cli("check", "eu-referendum", expect=1).stderr
    (workdir / "contacts" / "link.csv").unlink()
    absolute = write_message(workdir, "absolute", "Hello", contacts=[str(other / "*.csv")])
    cli("check", absolute)  # an absolute path is a deliberate choice


# --- 14. suppressions kept by `forget` are keyed with BULLETIN_SECRET --------------------------

V2_LEDGER = Path(__file__).parent.parent / "data" / "ledger" / "bulletin-v2.db"
HASH_SECRET = "keyed-hash-test-secret-0123456789abcdef"


def plain_sha256(email: str) -> str:
    import hashlib

    return hashlib.sha256(email.lower().encode()).hexdigest()


def second_message(workdir: Path) -> str:
    letter = workdir / "messages" / "eu-referendum.md"
    (workdir / "messages" / "next.md").write_text(letter.read_text("utf-8"), "utf-8")
    return "next"


def test_12_14_forget_with_a_secret_keeps_no_plain_hash_and_still_skips_them(
    workdir, cli, sendgrid_env, db_path, monkeypatch
):
    from reliability_harness import raw_bytes

    from bulletin.ledger.keys import keyed_hash
    from bulletin.ledger.store import open_ledger

    monkeypatch.setenv("BULLETIN_SECRET", HASH_SECRET)
    person = "margaret.okafor@example.org"
    cli("send", "eu-referendum", "--yes")
    cli("suppress", "add", person, "--reason", "asked by phone")  # a plain-hash row, address too
    result = cli("forget", person)
    assert "BULLETIN_SECRET" not in result.stdout
    disk = raw_bytes(db_path)
    assert plain_sha256(person).encode() not in disk.lower()
    assert person.encode() not in disk.lower()
    with open_ledger(db_path) as ledger:  # what is kept: the keyed hash only, no address
        rows = [r for r in ledger.suppressions() if r["email"] is None]
    assert [r["email_hash"] for r in rows] == [keyed_hash(person, HASH_SECRET)]
    assert rows[0]["email_hash"].startswith("k1:")

    sendgrid_env.reset()
    cli("send", second_message(workdir), "--yes")
    delivered = set(sendgrid_env.delivered_emails())
    assert delivered and person not in delivered
    # Added again by hand, it is already on the list: no plain hash with the address comes back.
    assert "already suppressed" in cli("suppress", "add", person).stdout
    assert plain_sha256(person).encode() not in raw_bytes(db_path).lower()


def test_12_14_plain_hash_suppressions_from_before_still_suppress(
    workdir, cli, sendgrid_env, db_path, monkeypatch
):
    """bulletin-v2.db forgot david.oneill@example.com under a plain SHA-256 (no secret then)."""
    import shutil

    from bulletin.ledger.store import open_ledger

    monkeypatch.setenv("BULLETIN_SECRET", HASH_SECRET)
    person = "david.oneill@example.com"
    shutil.copyfile(V2_LEDGER, db_path)
    with open_ledger(db_path, secret=HASH_SECRET) as ledger:
        assert plain_sha256(person) in ledger.forgotten_hashes()
        assert ledger.is_suppressed(person.upper())
    cli("send", second_message(workdir), "--yes")
    delivered = set(sendgrid_env.delivered_emails())
    assert delivered and person not in delivered
    # Forgetting them again (the address is given) moves the row to the keyed hash.
    cli("forget", person)
    with open_ledger(db_path, secret=HASH_SECRET) as ledger:
        assert plain_sha256(person) not in ledger.suppressed_hashes()
        assert ledger.is_suppressed(person)
    with open_ledger(db_path) as ledger:  # opened without the secret, the keyed row is opaque
        assert not ledger.is_suppressed(person)


def test_12_14_forget_without_a_secret_keeps_a_plain_hash_and_says_so(
    workdir, cli, db_path, monkeypatch
):
    from bulletin.ledger.store import open_ledger

    monkeypatch.delenv("BULLETIN_SECRET", raising=False)
    person = "margaret.okafor@example.org"
    cli("send", "eu-referendum", "--yes")
    result = cli("forget", person)
    assert "BULLETIN_SECRET is not set" in result.stdout
    with open_ledger(db_path) as ledger:
        assert ledger.forgotten_hashes() == {plain_sha256(person)}
    with open_ledger(db_path, secret=HASH_SECRET) as ledger:  # a secret set later still matches
        assert ledger.is_suppressed(person)
    cli("send", second_message(workdir), "--yes")
    sent = list((workdir / "outbox").glob("2-*.eml"))
    assert sent and not [p for p in sent if person.encode() in p.read_bytes().lower()]
