"""`bulletin report SEND`: one self-contained HTML page about a send, for a manager.

No remote assets and no scripts: inline CSS, an inline SVG chart, every value escaped. The
layout is `templates/report.html` (a working folder's copy overrides the packaged one).
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bulletin.config import Settings
from bulletin.ledger import states as ledger_states
from bulletin.ledger.keys import utcnow
from bulletin.ledger.states import Cause, State
from bulletin.status import tracking, tracking_line

if TYPE_CHECKING:
    from bulletin.ledger.store import Ledger as Tracker
    from bulletin.ledger.store import SendRow

LONDON = ZoneInfo("Europe/London")
_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_DROP_REASONS = {
    "bounced address": "Dropped: the address bounced before",
    "unsubscribed address": "Dropped: unsubscribed earlier",
    "spam reporting address": "Dropped: reported spam earlier",
    "invalid": "Dropped: invalid address",
}


def failure_label(state: str, error: str | None, cause: str | None = None) -> str:
    """A short, human reason for a recipient who did not get the email."""
    text = (error or "").strip()
    if state == State.FAILED:
        return "Refused before sending"
    if state == State.DROPPED:
        if cause == Cause.SUPPRESSED:
            return "Skipped: on the do-not-send list"
        if cause == Cause.LEFT:
            return "Skipped: left the audience"
        return _DROP_REASONS.get(text.lower(), f"Dropped: {text}" if text else "Dropped")
    prefix = "Blocked: " if state == State.BLOCKED else ""
    match = _STATUS_CODE.search(text)
    if match is None:
        return prefix + "Other reason"
    klass, subject, detail = match.groups()
    if subject == "1":
        label = "Address or domain does not exist"
    elif subject == "2" and detail == "2":
        label = "Mailbox full"
    elif subject == "2":
        label = "Mailbox unavailable"
    elif subject == "7":
        label = "Refused as spam or by policy"
    elif subject == "4":
        label = "Network or routing problem"
    elif klass == "4":
        label = "Temporary failure, gave up"
    else:
        label = "Other permanent failure"
    return prefix + label


def percent(value: float | None) -> str:
    """Every percentage on the page has one decimal (issue 15: consistent decimals)."""
    return "–" if value is None else f"{value:.1%}"


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# States in words, as a reader would say them (issue 15).
STATE_WORDS = {
    State.PENDING: "waiting to be sent",
    State.SENDING: "being sent",
    State.ACCEPTED: "accepted, no news yet",
    State.DELIVERED: "delivered",
    State.DEFERRED: "delayed by their mail server",
    State.BOUNCED: "bounced",
    State.DROPPED: "dropped by SendGrid",
    State.BLOCKED: "blocked",
    State.SPAMREPORT: "spam report",
    State.UNSUBSCRIBED: "unsubscribed",
    State.FAILED: "refused before sending",
    State.UNKNOWN: "unknown (the send was interrupted)",
}


def _in_order(group: frozenset[State]) -> tuple[State, ...]:
    return tuple(s for s in State if s in group)


DELIVERED = _in_order(ledger_states.DELIVERED)  # the recipient's server took it
NOT_ARRIVED = _in_order(ledger_states.NOT_ARRIVED)
NO_NEWS = _in_order(ledger_states.NO_NEWS)
TRANSPORT_NAMES = {"sendgrid": "SendGrid", "smtp": "the mail server", "outbox": "the outbox"}


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    detail: str
    tone: str = ""  # "good", "bad" or "" (neutral)


@dataclass(frozen=True)
class Row:
    label: str
    count: int
    share: str  # of the emails handed over; "" where that base does not apply
    level: int = 0  # 0: a group, 1: a state within it
    tone: str = ""


@dataclass
class Recipient:
    """One delivery as the report sees it."""

    state: str
    skipped: bool  # dropped by us before sending: on the do-not-send list
    opened: bool
    clicked: bool
    ward: str

    @property
    def handed_over(self) -> bool:
        return not self.skipped and self.state in ledger_states.HANDED_OVER


def _local(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC).astimezone(LONDON)


# Series of the chart. Each is exactly the recipients its tile counts, placed in time at the
# first event that showed it (a recipient with no such event is counted at the end), so a
# line always ends at its tile's value (issue 15).
@dataclass(frozen=True)
class Series:
    label: str
    short: str  # beside the line's end
    colour: str
    dash: str
    events: tuple[str, ...]


SERIES = (
    Series(
        "Delivered",
        "delivered",
        "#1d4ed8",
        "",
        ("delivered", "open", "click", "spamreport", "unsubscribe"),
    ),
    Series("Opened", "opened", "#15803d", "6 3", ("open", "click")),
    Series("Clicked a link", "clicked", "#7e22ce", "2 3", ("click",)),
    Series("Did not arrive", "did not arrive", "#b91c1c", "10 4 2 4", ("bounce", "dropped")),
)
_STEPS = [
    60 * m for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)
]  # seconds between time ticks: round minutes, hours, days, a week


def time_ticks(start: float, end: float, most: int) -> tuple[float, float, list[float], str]:
    """A domain widened to round times, at most `most` ticks on it, and the tick format."""
    offset = _local(start).utcoffset().total_seconds()  # round in UK time, not UTC
    for step in _STEPS:
        low = (start + offset) // step * step - offset
        high = -(-(end + offset) // step) * step - offset
        if high == low:
            high = low + step
        if (high - low) / step + 1 <= most:
            break
    ticks = [low + i * step for i in range(int((high - low) // step) + 1)]
    same_day = _local(low).date() == _local(high - 1).date()
    fmt = "%H:%M" if same_day else "%d %b" if step >= 86400 else "%a %H:%M"
    return low, high, ticks, fmt


def chart_svg(
    times: dict[str, list[float]], base: int, *, width: int, height: int, most_ticks: int
) -> str:
    """Running share of the `base` emails in each series, with round time ticks and each
    line's end value written beside it. Drawn at its own size for wide and narrow screens
    (the page shows one), so that text is never scaled below its font size by much."""
    narrow = width < 500
    left, right, top, bottom = 44, (62 if narrow else 180), 14, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    stamps = [t for series in times.values() for t in series]
    low, high, ticks, fmt = time_ticks(min(stamps), max(stamps), most_ticks)

    def x(t: float) -> float:
        return left + (t - low) / (high - low) * plot_w

    def y(value: float) -> float:
        return top + (1 - value) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'class="chart {"chart-narrow" if narrow else "chart-wide"}" '
        f'aria-label="Running share of the {base:,} emails, by the time of the first event">',
    ]
    for value in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
            f'stroke="{"#9ca3af" if value == 0 else "#e5e7eb"}" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
            f'class="axis">{value:.0%}</text>'
        )
    for i, t in enumerate(ticks):
        anchor = "start" if i == 0 else "end" if i == len(ticks) - 1 else "middle"
        parts.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y(0):.1f}" y2="{y(0) + 4:.1f}" '
            f'stroke="#9ca3af"/><text x="{x(t):.1f}" y="{height - bottom + 20}" '
            f'text-anchor="{anchor}" class="axis">{html.escape(_local(t).strftime(fmt))}</text>'
        )
    ends = []
    for series in SERIES:
        series_times = sorted(times.get(series.label, []))
        if not series_times:
            continue
        coords, count = [f"{x(low):.1f},{y(0):.1f}"], 0
        for t in series_times:  # a step line: flat, then up at each recipient's event
            coords.append(f"{x(t):.1f},{y(count / base):.1f}")
            count += 1
            coords.append(f"{x(t):.1f},{y(count / base):.1f}")
        coords.append(f"{x(high):.1f},{y(count / base):.1f}")
        dashes = f' stroke-dasharray="{series.dash}"' if series.dash else ""
        value = percent(count / base)
        parts.append(
            f'<polyline fill="none" stroke="{series.colour}" stroke-width="2.5"{dashes} '
            f'stroke-linejoin="round" points="{" ".join(coords)}"><title>{series.label}: '
            f"{count:,} of {base:,} ({value})</title></polyline>"
        )
        label = value if narrow else f"{value} {series.short}"
        ends.append([y(count / base) + 4, label, series.colour, series.label])
    # End labels in the right margin, pushed apart so they never overlap.
    ends.sort(key=lambda e: e[0])
    for i in range(1, len(ends)):
        ends[i][0] = max(ends[i][0], ends[i - 1][0] + 15)
    overflow = ends[-1][0] - (height - bottom + 4) if ends else 0
    for end in ends:
        end[0] -= max(0, overflow)
    for label_y, label, colour, name in ends:
        parts.append(
            f'<text x="{left + plot_w + 6}" y="{label_y:.1f}" class="end" fill="{colour}" '
            f'data-series="{name}">{html.escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _recipients(tracker: Tracker, send_id: int) -> dict[int, Recipient]:
    return {
        row.id: Recipient(
            state=row.state,
            skipped=row.suppressed,
            opened=bool(row.opened),
            clicked=bool(row.clicked),
            ward=row.ward or "",
        )
        for row in tracker.delivery_rows(send_id)
    }


def _groups(people: list[Recipient]) -> dict[str, int]:
    """The counts every table, tile and line of the page is made of."""
    handed = [p for p in people if p.handed_over]
    return {
        "audience": len(people),
        "handed": len(handed),
        "skipped": sum(p.skipped for p in people),
        "delivered": sum(p.state in DELIVERED for p in handed),
        "opened": sum(p.opened for p in handed),
        "clicked": sum(p.clicked for p in handed),
        "not_arrived": sum(p.state in NOT_ARRIVED for p in handed),
        "unsubscribed": sum(p.state == State.UNSUBSCRIBED for p in handed),
        "spamreport": sum(p.state == State.SPAMREPORT for p in handed),
    }


def _member(series: Series, person: Recipient) -> bool:
    return {
        "Delivered": person.state in DELIVERED,
        "Opened": person.opened,
        "Clicked a link": person.clicked,
        "Did not arrive": person.state in NOT_ARRIVED,
    }[series.label]


def x_of(part: int, whole: int) -> str:
    return f"{part:,} of {whole:,}"


def report_context(tracker: Tracker, send: SendRow, settings: Settings) -> dict:
    """Everything the template shows, computed from the tracking database.

    Every rate on the page is a share of one number, the emails handed to the transport,
    and the page says so (issue 15).
    """
    by_id = _recipients(tracker, send.id)
    people = list(by_id.values())
    counts = tracker.counts(send.id)
    if not people:  # purged: only the totals were kept
        people = [
            Recipient(state, False, False, False, "")
            for state, n in counts.by_state.items()
            for _ in range(n)
        ]
    g = _groups(people)
    base = g["handed"]
    first = tracker.first_event_times(send.id)
    tracked = send.transport == "sendgrid" or bool(first)
    via = TRANSPORT_NAMES.get(send.transport, send.transport)
    not_tracked = "not tracked"

    def rate_tile(label: str, key: str, tone: str = "") -> Tile:
        if not tracked:
            return Tile(label, not_tracked, f"{via} reports no deliveries")
        return Tile(label, percent(share(g[key], base)), x_of(g[key], base), tone)

    tiles = [
        Tile(
            "Handed to " + via,
            f"{base:,}",
            f"of {g['audience']:,} in the audience"
            + (f"; {g['skipped']:,} on the do-not-send list" if g["skipped"] else ""),
        ),
        rate_tile("Delivered", "delivered"),
        rate_tile("Opened", "opened"),
        rate_tile("Clicked a link", "clicked"),
        rate_tile("Did not arrive", "not_arrived", "bad" if g["not_arrived"] else ""),
        Tile(
            "Unsubscribed",
            f"{g['unsubscribed']:,}" if tracked else not_tracked,
            (
                f"{x_of(g['unsubscribed'], base)}; {g['spamreport']:,} spam report"
                + ("s" if g["spamreport"] != 1 else "")
            )
            if tracked
            else f"{via} reports no unsubscribes",
            "bad" if g["spamreport"] else "",
        ),
    ]

    times: dict[str, list[float]] = {}
    events: dict[int, dict[str, float]] = {}
    for row in first:
        events.setdefault(row["delivery_id"], {})[row["event"]] = row["timestamp"]
    charts = {}
    if first and base:
        last = max(row["timestamp"] for row in first)
        for series in SERIES:
            times[series.label] = [
                min(
                    (t for kind, t in events.get(key, {}).items() if kind in series.events),
                    default=last,
                )
                for key, person in by_id.items()
                if person.handed_over and _member(series, person)
            ]
        charts = {
            "wide": chart_svg(times, base, width=760, height=300, most_ticks=7),
            "narrow": chart_svg(times, base, width=340, height=260, most_ticks=4),
        }

    reasons = Counter(
        failure_label(r.state, r.error, r.cause) for r in tracker.failure_rows(send.id)
    )
    wards = []
    for ward in sorted({p.ward for p in people}, key=lambda w: (w == "", w.lower())):
        w = _groups([p for p in people if p.ward == ward])
        wards.append(
            {
                "ward": ward or "(no ward)",
                "audience": w["audience"],
                "handed": w["handed"],
                "cells": [
                    (key, percent(share(w[key], w["handed"])), x_of(w[key], w["handed"]))
                    for key in ("delivered", "opened", "clicked", "not_arrived")
                ],
                "unsubscribed": w["unsubscribed"] + w["spamreport"],
            }
        )

    def state_rows(states: tuple[str, ...], level: int = 1, tone: str = "") -> list[Row]:
        rows = []
        for state in states:
            n = sum(p.state == state and p.handed_over for p in people)
            if n:
                label = (
                    "delivered, nothing since"
                    if state == State.DELIVERED
                    else STATE_WORDS[State(state)]
                )
                rows.append(Row(label, n, percent(share(n, base)), level, tone))
        return rows

    not_handed = Counter(
        "skipped: on the do-not-send list" if p.skipped else STATE_WORDS[p.state]
        for p in people
        if not p.handed_over
    )
    no_news = sum(p.state in (*NO_NEWS, State.UNKNOWN) and p.handed_over for p in people)

    def group(label: str, n: int, tone: str = "") -> list[Row]:
        return [Row(label, n, percent(share(n, base)), 0, tone)] if n else []

    states = [
        *group("Delivered", g["delivered"]),
        *state_rows(DELIVERED),
        *group("Did not arrive", g["not_arrived"], "bad"),
        *state_rows(NOT_ARRIVED, tone="bad"),
        *group("No news yet", no_news),
        *state_rows((*NO_NEWS, State.UNKNOWN)),
        Row(f"Handed to {via}", base, percent(share(base, base)) if base else "–"),
    ]
    if not_handed:
        states += [Row("Not handed over", sum(not_handed.values()), "")]
        states += [Row(label, n, "", 1) for label, n in not_handed.most_common()]
    created = datetime.fromisoformat(send.created_at).astimezone(LONDON)
    return {
        "send": send,
        "sender": " · ".join(s for s in (settings.organisation, settings.unit) if s),
        "created": created.strftime("%A %d %B %Y, %H:%M"),
        "generated": datetime.fromisoformat(utcnow())
        .astimezone(LONDON)
        .strftime("%d %B %Y, %H:%M"),
        "tiles": tiles,
        "charts": charts,
        "events_seen": bool(first),
        "tracked": tracked,
        "outbox": send.transport == "outbox",
        "tracking": tracking_line(tracking(send)),
        "approval": _approval_lines(tracker, send.id),  # who signed it off (issue 17)
        "via": via,
        "base": base,
        "audience": g["audience"],
        "reasons": reasons.most_common(),
        "wards": wards,
        "states": states,
        "series": SERIES,
    }


def feedback_context(tracker: Tracker, send: SendRow) -> dict:
    """The "Was this useful?" section (issue 18): shares overall and by ward, comments newest
    first. Comments name a ward and an answer, never a person: the report gets forwarded."""
    from bulletin.feedback import ANSWER_WORDS, ANSWERS
    from bulletin.ledger.feedback import FeedbackStore

    store = FeedbackStore(tracker)
    counts = store.counts(send.id)
    total = sum(counts.values())
    wards = []
    for ward in store.ward_counts(send.id):
        cells = [
            (
                ANSWER_WORDS[a],
                percent(share(ward.counts[a], ward.total)),
                x_of(ward.counts[a], ward.total),
            )
            for a in ANSWERS
        ]
        wards.append({"ward": ward.ward or "Not recorded", "total": ward.total, "cells": cells})
    comments = [
        {
            "when": datetime.fromisoformat(c.commented_at or c.answered_at)
            .astimezone(LONDON)
            .strftime("%d %B %Y, %H:%M"),
            "answer": ANSWER_WORDS[c.answer],
            "ward": c.ward,
            "comment": c.comment,
        }
        for c in store.comments(send.id)
    ]
    return {
        "total": total,
        "rows": [
            {
                "label": ANSWER_WORDS[a],
                "count": counts[a],
                "share": percent(share(counts[a], total)),
            }
            for a in ANSWERS
        ],
        "wards": wards,
        "comments": comments,
    }


def _approval_lines(tracker: Tracker, send_id: int) -> list[str]:
    from bulletin.approval import record_lines, send_record

    record = send_record(tracker, send_id)
    return record_lines(record) if record else []


def render_report(tracker: Tracker, send: SendRow, settings: Settings) -> str:
    """The report as one HTML document."""
    from markupsafe import Markup

    from bulletin.render import template_environment

    context = report_context(tracker, send, settings)
    context["feedback"] = feedback_context(tracker, send)
    context["charts"] = {k: Markup(v) for k, v in context["charts"].items()}  # escaped parts
    return template_environment(settings.workdir).get_template("report.html").render(context)
