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
from zoneinfo import ZoneInfo

from bulletin.config import Settings
from bulletin.status import SENT_STATES, tracking, tracking_line
from bulletin.tracking import SendRow, State, Tracker, utcnow

LONDON = ZoneInfo("Europe/London")
# Chart series: (label, events counted, colour, dash pattern for readers who cannot tell colours)
SERIES = (
    ("Delivered", ("delivered",), "#1d4ed8", ""),
    ("Opened", ("open",), "#15803d", "6 3"),
    ("Clicked", ("click",), "#7e22ce", "2 3"),
    ("Bounced or dropped", ("bounce", "dropped"), "#b91c1c", "10 4 2 4"),
)
_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_DROP_REASONS = {
    "bounced address": "Dropped: the address bounced before",
    "unsubscribed address": "Dropped: unsubscribed earlier",
    "spam reporting address": "Dropped: reported spam earlier",
    "invalid": "Dropped: invalid address",
}


def failure_label(state: str, error: str | None) -> str:
    """A short, human reason for a recipient who did not get the email."""
    text = (error or "").strip()
    if state == "failed":
        return "Refused before sending"
    if state == "dropped":
        if text.startswith("suppressed:"):
            return "Skipped: on the do-not-send list"
        return _DROP_REASONS.get(text.lower(), f"Dropped: {text}" if text else "Dropped")
    prefix = "Blocked: " if state == "blocked" else ""
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


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def percent(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.0%}" if value in (0, 1) else f"{value:.1%}"


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    detail: str
    tone: str = ""


def _local(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC).astimezone(LONDON)


def chart_svg(first_times: list[tuple[int, str, int]], sent: int) -> str:
    """Cumulative share of sent recipients delivered / opened / clicked / bounced, over time.

    `first_times` is (delivery id, event, timestamp) of each recipient's first event of
    each kind; a recipient counts once per series, at their earliest matching event.
    """
    width, height = 760, 300
    left, right, top, bottom = 56, 16, 16, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    start = min(t for _, _, t in first_times)
    end = max(t for _, _, t in first_times)
    if end == start:
        end = start + 3600
    points = 80

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * plot_w

    def y(share: float) -> float:
        return top + (1 - share) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        'aria-labelledby="chart-title chart-desc" class="chart">',
        '<title id="chart-title">Recipients reached over time</title>',
        '<desc id="chart-desc">Running share of sent emails delivered, opened, clicked and '
        "bounced or dropped, from the first event to the last.</desc>",
    ]
    for share in (0, 0.25, 0.5, 0.75, 1):
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(share):.1f}" y2="{y(share):.1f}" '
            f'stroke="#e5e7eb" stroke-width="1"/>'
            f'<text x="{left - 8}" y="{y(share) + 4:.1f}" text-anchor="end" '
            f'class="axis">{share:.0%}</text>'
        )
    span = end - start
    fmt = "%H:%M" if span <= 86400 and _local(start).date() == _local(end).date() else "%d %b %H:%M"
    if span > 4 * 86400:
        fmt = "%d %b"
    for i in range(6):
        t = start + span * i / 5
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        parts.append(
            f'<text x="{x(t):.1f}" y="{height - bottom + 20}" text-anchor="{anchor}" '
            f'class="axis">{html.escape(_local(int(t)).strftime(fmt))}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
        'stroke="#9ca3af" stroke-width="1"/>'
    )
    for label, kinds, colour, dash in SERIES:
        earliest: dict[int, int] = {}
        for delivery, kind, t in first_times:
            if kind in kinds and (delivery not in earliest or t < earliest[delivery]):
                earliest[delivery] = t
        times = sorted(earliest.values())
        if not times:
            continue
        coords, index = [], 0
        for step in range(points + 1):
            t = start + (end - start) * step / points
            while index < len(times) and times[index] <= t:
                index += 1
            coords.append(f"{x(t):.1f},{y(min(1.0, index / sent)):.1f}")
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2.5"{dashes} '
            f'points="{" ".join(coords)}"><title>{html.escape(label)}: '
            f"{len(times)} ({percent(len(times) / sent)})</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def report_context(tracker: Tracker, send: SendRow, settings: Settings) -> dict:
    """Everything the template shows, computed from the tracking database."""
    counts = tracker.counts(send.id)
    recipients = sum(counts[s.value] for s in State)
    failures = tracker.failure_rows(send.id)
    skipped = sum(
        1 for r in failures if r["state"] == "dropped" and (r["error"] or "").startswith("supp")
    )
    sent = sum(counts[s] for s in SENT_STATES) - skipped
    reached = counts["delivered"] + counts["spamreport"] + counts["unsubscribed"]
    engaged_base = reached or sent
    base_name = "delivered" if reached else "sent"
    failed_sends = counts["bounced"] + counts["dropped"] + counts["blocked"] - skipped
    tiles = [
        Tile("Sent", f"{sent:,}", f"of {recipients:,} in the audience"),
        Tile(
            "Delivered",
            percent(_share(reached, sent)),
            f"{reached:,} reached the inbox",
            "good",
        ),
        Tile(
            "Opened",
            percent(_share(counts["opened"], engaged_base)),
            f"{counts['opened']:,} of {engaged_base:,} {base_name}",
            "good",
        ),
        Tile(
            "Clicked a link",
            percent(_share(counts["clicked"], engaged_base)),
            f"{counts['clicked']:,} of {engaged_base:,} {base_name}",
            "good",
        ),
        Tile(
            "Bounced or dropped",
            percent(_share(failed_sends, sent)),
            f"{failed_sends:,} did not arrive",
            "bad" if failed_sends else "",
        ),
        Tile(
            "Unsubscribed",
            f"{counts['unsubscribed']:,}",
            f"and {counts['spamreport']:,} spam report(s)",
            "bad" if counts["spamreport"] else "",
        ),
    ]
    first = [
        (r["delivery_id"], r["event"], r["timestamp"]) for r in tracker.first_event_times(send.id)
    ]
    charted = [row for row in first if any(row[1] in s[1] for s in SERIES)]
    reasons = Counter(failure_label(r["state"], r["error"]) for r in failures)
    wards = []
    for row in tracker.ward_counts(send.id):
        ward_sent = row["sent"] or 0
        ward_reached = row["delivered"] or 0
        base = ward_reached or ward_sent
        wards.append(
            {
                "ward": row["ward"] or "(no ward)",
                "recipients": row["recipients"],
                "delivered": _share(ward_reached, ward_sent),
                "opened": _share(row["opened"] or 0, base),
                "clicked": _share(row["clicked"] or 0, base),
                "bounced": row["bounced"] or 0,
                "unsubscribed": row["unsubscribed"] or 0,
            }
        )
    states = [
        (s.value, counts[s.value], _share(counts[s.value], recipients))
        for s in State
        if counts[s.value]
    ]
    created = datetime.fromisoformat(send.created_at).astimezone(LONDON)
    return {
        "send": send,
        "sender": " · ".join(s for s in (settings.organisation, settings.unit) if s),
        "created": created.strftime("%A %d %B %Y, %H:%M"),
        "generated": datetime.fromisoformat(utcnow())
        .astimezone(LONDON)
        .strftime("%d %B %Y, %H:%M"),
        "tiles": tiles,
        "chart": chart_svg(charted, max(sent, 1)) if charted else "",
        "events_seen": bool(first),
        "outbox": send.transport == "outbox",
        "tracking": tracking_line(tracking(send)),
        "reasons": [
            (label, n, percent(_share(n, recipients))) for label, n in reasons.most_common()
        ],
        "wards": wards,
        "states": states,
        "recipients": recipients,
        "sent": sent,
        "percent": percent,
        "series": [(label, colour, dash) for label, _, colour, dash in SERIES],
    }


def render_report(tracker: Tracker, send: SendRow, settings: Settings) -> str:
    """The report as one HTML document."""
    from markupsafe import Markup

    from bulletin.render import template_environment

    context = report_context(tracker, send, settings)
    context["chart"] = Markup(context["chart"])  # built above from escaped parts
    return template_environment(settings.workdir).get_template("report.html").render(context)
