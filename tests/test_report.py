"""`bulletin report SEND`: a self-contained HTML page of a send's outcome."""

from __future__ import annotations

import re
import sqlite3
from html.parser import HTMLParser

import pytest
from browser import save_screenshot

from bulletin.events import apply_events, parse_event
from bulletin.report import failure_label
from bulletin.tracking import Tracker

T0 = 1_719_820_800  # 2024-07-01 08:00 UTC, 09:00 in London


@pytest.fixture
def sent(workdir, cli, sendgrid_env):
    return send_to_all(workdir, cli)


@pytest.fixture
def outbox_sent(workdir, cli, monkeypatch):
    monkeypatch.setenv("BULLETIN_SECRET", "report-test-secret-0123456789abcdef")
    return send_to_all(workdir, cli)


def send_to_all(workdir, cli):
    (workdir / "contacts" / "extra.csv").write_text(
        "email,first_name,ward\n"
        "evil@example.net,Eve,<img src=x onerror=alert(1)>\n"
        "noward@example.net,Nia,\n"
    )
    cli("send", "eu-referendum", "--yes")
    return workdir


def apply(workdir, events: list[dict]) -> None:
    with Tracker(workdir / "bulletin.db") as tracker:
        apply_events(tracker, [parse_event(e) for e in events])


def story(workdir) -> None:
    """36 recipients: 30 delivered (12 opened, 4 clicked), 3 bounced, 1 dropped, 2 unsubscribed."""
    db = sqlite3.connect(workdir / "bulletin.db")
    rows = db.execute("SELECT id, email FROM deliveries ORDER BY id").fetchall()
    events = []

    def add(row, kind, at, **extra):
        events.append(
            {
                "email": row[1],
                "event": kind,
                "timestamp": T0 + at,
                "bulletin_send": "1",
                "bulletin_delivery": str(row[0]),
                "sg_event_id": f"{kind}-{row[0]}",
                **extra,
            }
        )

    for n, row in enumerate(rows[:32]):
        add(row, "delivered", 60 + n * 10)
    for n, row in enumerate(rows[:12]):
        add(row, "open", 3600 + n * 600)
    for row in rows[:4]:
        add(row, "click", 7200, url="https://www.example.org/hate-crime")
    add(rows[0], "unsubscribe", 9000)
    add(rows[1], "spamreport", 9500)
    add(rows[32], "bounce", 120, type="bounce", reason="550 5.1.1 <x>: user unknown")
    add(rows[33], "bounce", 130, type="bounce", reason="552 5.2.2 mailbox full")
    add(rows[34], "bounce", 140, type="blocked", reason="554 5.7.1 rejected by policy")
    add(rows[35], "dropped", 5, reason="Bounced Address")
    apply(workdir, events)


def test_report_is_self_contained_and_shows_what_a_manager_needs(sent, cli):
    story(sent)
    result = cli("report", "1", "-o", "report.html")
    assert result.stdout.startswith("Wrote report.html (")
    page = (sent / "report.html").read_text()

    # Self-contained: no scripts, no remote or external assets of any kind.
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page

    # Headline rates, all of the 36 handed over: 32 delivered (30 + 1 unsubscribed + 1 spam).
    tiles = dict(re.findall(r'<p class="label">([^<]+)</p>\s*<p class="value">([^<]+)</p>', page))
    assert tiles == {
        "Handed to SendGrid": "36",
        "Delivered": "88.9%",
        "Opened": "33.3%",  # 12 of 36
        "Clicked a link": "11.1%",
        "Did not arrive": "11.1%",
        "Unsubscribed": "1",
    }
    assert "12 of 36" in page and "reached the inbox" not in page
    # The chart: inline SVG (drawn for wide and for narrow screens), one line per series,
    # UK times on the axis at round times.
    svg = re.search(r"<svg[^>]*class=\"chart chart-wide\".*?</svg>", page, re.S).group(0)
    assert svg.count("<polyline") == 4 and "<title" in svg
    ticks = re.findall(r'class="axis">(\d\d:\d\d)<', svg)
    assert ticks[0] == "09:00" and all(t.endswith(("00", "30")) for t in ticks), ticks
    # States in words.
    assert ">spam report<" in page and "spamreport<" not in page
    # Bounces by reason, in words.
    for label in (
        "Address or domain does not exist",
        "Mailbox full",
        "Blocked: Refused as spam or by policy",
        "Dropped: the address bounced before",
    ):
        assert f'<th scope="row">{label}</th>' in page
    # By ward, with the hostile ward name escaped and the blank one named.
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img" not in page
    assert "(no ward)" in page and ">Penge and Cator<" in page


def test_report_parses_as_html_with_balanced_tags(sent, cli):
    story(sent)
    cli("report", "eu-referendum", "-o", "r.html")

    class Checker(HTMLParser):
        VOID = frozenset({"meta", "br", "img", "input", "hr", "link", "line", "polyline"})

        def __init__(self):
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag not in self.VOID:
                self.stack.append(tag)

        def handle_startendtag(self, tag, attrs):
            pass

        def handle_endtag(self, tag):
            if tag in self.VOID:
                return
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
            self.stack.pop()

    checker = Checker()
    checker.feed((sent / "r.html").read_text())
    assert checker.stack == []


def test_report_before_any_events_says_where_they_come_from(sent, cli):
    result = cli("report", "eu-referendum")
    assert "eu-referendum-report.html" in result.stdout
    page = (sent / "eu-referendum-report.html").read_text()
    assert "No delivery events have been recorded for this send yet" in page
    assert 'class="chart' not in page


def test_an_outbox_send_is_not_tracked_rather_than_zero(outbox_sent, cli):
    cli("report", "eu-referendum", "-o", "r.html")
    page = (outbox_sent / "r.html").read_text()
    assert "This send went to the outbox" in page
    tiles = dict(
        re.findall(r'<p class="label">([^<]+)</p>\s*<p class="value[^"]*">([^<]+)</p>', page)
    )
    assert tiles["Handed to the outbox"] == "36"
    for label in ("Delivered", "Opened", "Clicked a link", "Did not arrive", "Unsubscribed"):
        assert tiles[label] == "not tracked"
    assert ">0.0%" not in page and 'class="chart' not in page
    assert 'class="tile good' not in page and 'class="tile bad' not in page


def test_report_of_an_unknown_send_is_one_clear_line(sent, cli):
    result = cli("report", "7", expect=1)
    assert result.stderr.startswith("Error: no send '7'")


@pytest.mark.parametrize(
    ("state", "error", "label"),
    [
        (
            "bounced",
            "550 5.1.1 The email account does not exist",
            "Address or domain does not exist",
        ),
        ("bounced", "552 5.2.2 Mailbox full", "Mailbox full"),
        ("bounced", "550 5.2.1 Mailbox disabled", "Mailbox unavailable"),
        ("bounced", "550 5.7.1 Spam detected", "Refused as spam or by policy"),
        ("bounced", "451 4.4.1 No answer from host", "Network or routing problem"),
        ("bounced", "450 4.3.2 try again later", "Temporary failure, gave up"),
        ("bounced", "554 5.3.4 Message too big", "Other permanent failure"),
        ("bounced", "Host unknown", "Other reason"),
        ("blocked", "554 5.7.1 listed at a blocklist", "Blocked: Refused as spam or by policy"),
        ("dropped", "Invalid", "Dropped: invalid address"),
        ("dropped", "Unsubscribed Address", "Dropped: unsubscribed earlier"),
        ("dropped", "Spam Reporting Address", "Dropped: reported spam earlier"),
        ("dropped", "suppressed: spam report", "Skipped: on the do-not-send list"),
        ("dropped", "Invalid SMTPAPI header", "Dropped: Invalid SMTPAPI header"),
        ("failed", "HTTP 400: bad address", "Refused before sending"),
    ],
)
def test_failure_labels(state, error, label):
    cause = "suppressed" if error.startswith("suppressed:") else None  # the ledger's column
    assert failure_label(state, error, cause) == label


CHART_TEXT = """() => {
    const svg = [...document.querySelectorAll('svg.chart')].find(s => s.getClientRects().length);
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    return [...svg.querySelectorAll('text')].map(
        t => parseFloat(getComputedStyle(t).fontSize) * scale);
}"""


@pytest.mark.parametrize("width", [375, 1280])
def test_report_fits_the_screen_and_its_chart_text_is_readable(sent, cli, page, width):
    story(sent)
    cli("report", "1", "-o", "report.html")
    page.set_viewport_size({"width": width, "height": 900})
    page.goto((sent / "report.html").as_uri())
    save_screenshot(page, f"report-{width}")
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    sizes = page.evaluate(CHART_TEXT)
    assert sizes and min(sizes) >= 11, sizes
    # Each ward is readable without scrolling sideways: every cell on screen.
    right = page.evaluate(
        "Math.max(...[...document.querySelectorAll('#wards ~ table td')]"
        ".map(td => td.getBoundingClientRect().right))"
    )
    assert right <= width
    assert page.console_errors == []


def test_report_numbers_agree(sent, cli):
    story(sent)
    cli("report", "1", "-o", "report.html")
    page = (sent / "report.html").read_text()
    tiles = dict(re.findall(r'<p class="label">([^<]+)</p>\s*<p class="value">([^<]+)</p>', page))
    svgs = re.findall(r'<svg[^>]*class="chart[^"]*".*?</svg>', page, re.S)
    assert len(svgs) == 2  # wide and narrow
    for svg in svgs:
        ends = dict(re.findall(r'class="end" fill="[^"]+" data-series="([^"]+)">([\d.]+%)', svg))
        assert ends == {
            k: tiles[k] for k in ("Delivered", "Opened", "Clicked a link", "Did not arrive")
        }
    # The status table's Delivered group is the tile's count, on the same base.
    assert re.search(
        r'<tr class="group"><th scope="row">Delivered</th><td class="num">32</td>'
        r'<td class="num">88\.9%</td>',
        page,
    )
    assert (
        "Every percentage on this page is a share of the <strong>36 emails handed to SendGrid"
        in page
    )


@pytest.mark.parametrize(
    ("start", "end", "most", "expected"),
    [
        ("13:51", "15:07", 7, ["13:45", "14:00", "14:15", "14:30", "14:45", "15:00", "15:15"]),
        ("13:51", "15:07", 4, ["13:00", "14:00", "15:00", "16:00"]),
        ("09:01", "09:04", 7, ["09:01", "09:02", "09:03", "09:04"]),
        ("09:00", "09:00", 7, ["09:00", "09:01"]),
    ],
)
def test_time_ticks_fall_at_round_uk_times(start, end, most, expected):
    from datetime import datetime

    from bulletin.report import LONDON, time_ticks

    def at(hhmm: str) -> float:
        return datetime.fromisoformat(f"2024-07-01T{hhmm}").replace(tzinfo=LONDON).timestamp()

    low, high, ticks, fmt = time_ticks(at(start), at(end), most)
    shown = [datetime.fromtimestamp(t, LONDON).strftime(fmt) for t in ticks]
    assert shown == expected and low <= at(start) and high >= at(end)


def test_report_prints_on_a4(sent, cli):
    cli("report", "1", "-o", "r.html")
    page = (sent / "r.html").read_text()
    assert "@page { size: A4;" in page and "tr { break-inside: avoid; }" in page
