"""What happened to each send: counts by state, JSON for machines, CSV for spreadsheets."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import TYPE_CHECKING

from bulletin.errors import InputError
from bulletin.files import open_private
from bulletin.ledger import states
from bulletin.ledger.states import State

if TYPE_CHECKING:
    from bulletin.ledger.store import Ledger as Tracker
    from bulletin.ledger.store import SendRow

CSV_COLUMNS = (
    "send_id",
    "email",
    "first_name",
    "last_name",
    "ward",
    "state",
    "message_id",
    "updated_at",
    "error",
    "opened",
    "clicked",
)
# Shown in the order of the states, then the two flags (they count recipients, not states).
DISPLAY_ORDER = (*(state.value for state in State), "opened", "clicked")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def find_send(tracker: Tracker, ref: str) -> SendRow:
    """A send by number, or the latest send of a message name."""
    ref = ref.strip()
    row = tracker.get_send(int(ref)) if ref.isdigit() else None
    if row is None and not ref.isdigit():
        name = Path(ref).stem
        row = tracker.latest_send(name)
    if row is None:
        raise InputError(f"no send {ref!r} in {tracker.path}; run `bulletin status` to list sends")
    return row


def summary(tracker: Tracker, send: SendRow) -> dict:
    from bulletin.approval import send_record
    from bulletin.ledger.feedback import FeedbackStore

    counts = tracker.counts(send.id)
    return {
        "id": send.id,
        "message": send.message,
        "subject": send.subject,
        "reference": send.reference,
        "transport": send.transport,
        "created_at": send.created_at,
        "completed_at": send.completed_at,
        "recipients": counts.total,
        "counts": dict(counts),
        "tracking": tracking(send),
        "feedback": FeedbackStore(tracker).counts(send.id),  # "Was this useful?" (issue 18)
        "approval": send_record(tracker, send.id),  # who signed it off (issue 17)
        # Processes sending it now, by their leases (issue 13); `live` false: taken for dead.
        "senders": [
            {"host": h.host, "pid": h.pid, "lease_until": h.expires_at, "live": h.live}
            for h in tracker.holders(send.id)
        ],
    }


def tracking(send: SendRow) -> dict[str, bool | None]:
    """Whether the send asked SendGrid to track opens / clicks; None: not recorded (issue 19)."""
    if send.transport != "sendgrid":
        return {"opens": False, "clicks": False}  # SMTP and the outbox track nothing
    return {
        "opens": None if send.open_tracking is None else bool(send.open_tracking),
        "clicks": None if send.click_tracking is None else bool(send.click_tracking),
    }


def tracking_line(flags: dict[str, bool | None]) -> str:
    """`Opens tracked: yes · Clicks tracked: no` from `tracking()`, for status and the report."""
    words = {True: "yes", False: "no", None: "not recorded"}
    return f"Opens tracked: {words[flags['opens']]} · Clicks tracked: {words[flags['clicks']]}"


# Listed by `status SEND` even at zero (issue 5); other states only when someone is in them.
ALWAYS_SHOWN = (
    *(s.value for s in State if s not in states.OPEN and s != State.BLOCKED),
    "opened",
    "clicked",
)
# States of recipients the transport took (or may have taken): the basis of the rates.
SENT_STATES = tuple(s.value for s in State if s in states.SENT)
HANDED_OVER = (*SENT_STATES, State.UNKNOWN.value)


def rates_basis(counts: dict[str, int]) -> int:
    """Recipients handed to the transport: what every rate is a share of."""
    return sum(counts[s] for s in HANDED_OVER)


def rates(counts: dict[str, int]) -> dict[str, float]:
    """Shares of the recipients handed to the transport (delivered, bounced, opened…)."""
    sent = rates_basis(counts)
    if not sent:
        return {}
    keys = (*HANDED_OVER, "opened", "clicked")
    return {k: counts[k] / sent for k in keys}


def feedback_line(counts: dict[str, int]) -> str:
    """`Feedback: 3 useful · 1 not useful · 0 concern` for `status SEND` (issue 18)."""
    return (
        f"Feedback: {counts['useful']} useful · {counts['not_useful']} not useful · "
        f"{counts['concern']} concern"
    )


def neutralise(value: object) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(tracker: Tracker, sends: list[SendRow], path: Path) -> int:
    """One row per recipient; returns the number of rows."""
    import contextlib
    import sys

    count = 0
    if str(path) == "-":  # `-o -`: stdout (issue 16)
        handle = contextlib.nullcontext(sys.stdout)
    else:
        try:
            handle = os.fdopen(open_private(path), "w", newline="", encoding="utf-8")
        except OSError as error:
            raise InputError(
                f"cannot write {path}: {error.strerror}; choose another -o path"
            ) from None
    with handle as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for send in sends:
            for row in tracker.delivery_rows(send.id):
                writer.writerow(
                    [neutralise(row[c]) if c != "send_id" else row[c] for c in CSV_COLUMNS]
                )
                count += 1
    return count
