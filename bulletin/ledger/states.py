"""Delivery states, their groupings and the precedence of events: the one place that names them.

Importing this module loads no database code, so transports and reports may use it freely.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    PENDING = "pending"
    SENDING = "sending"  # claimed; the request may be in flight
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    BLOCKED = "blocked"
    SPAMREPORT = "spamreport"
    UNSUBSCRIBED = "unsubscribed"
    FAILED = "failed"  # rejected by the transport
    UNKNOWN = "unknown"  # the process died or the answer was lost mid-request


class Cause(StrEnum):
    """Why a row was dropped by bulletin itself (the `cause` column), not by the transport."""

    SUPPRESSED = "suppressed"  # on the do-not-send list when its turn came
    LEFT = "left"  # left the audience before its turn


# Still owed a send: waiting, or claimed by a sender.
OPEN = frozenset({State.PENDING, State.SENDING})
# Per-recipient terminal outcomes: none of these is ever sent again by a resumed send.
FINAL = frozenset(State) - OPEN
# Handed to the transport and accepted by it (whatever happened after).
SENT = frozenset(State) - {State.PENDING, State.SENDING, State.FAILED, State.UNKNOWN}
# The recipient's server took it.
DELIVERED = frozenset({State.DELIVERED, State.SPAMREPORT, State.UNSUBSCRIBED})
# It did not arrive.
NOT_ARRIVED = frozenset({State.BOUNCED, State.DROPPED, State.BLOCKED})
UNSUBSCRIBED = frozenset({State.SPAMREPORT, State.UNSUBSCRIBED})
# Rows whose error text explains a failure.
FAILURES = NOT_ARRIVED | {State.FAILED}
# Accepted, with no later news yet.
NO_NEWS = frozenset({State.ACCEPTED, State.DEFERRED})
# Reached the transport in some way (`bulletin run` counts these as sent).
REACHED = frozenset(State) - {State.PENDING, State.FAILED, State.DROPPED}
# Handed over, whether or not the transport answered.
HANDED_OVER = SENT | {State.UNKNOWN}

# Event type → the delivery state it records.
STATE_FOR_EVENT = {
    "processed": State.ACCEPTED,
    "deferred": State.DEFERRED,
    "delivered": State.DELIVERED,
    "dropped": State.DROPPED,
    "spamreport": State.SPAMREPORT,
    "unsubscribe": State.UNSUBSCRIBED,
    "group_unsubscribe": State.UNSUBSCRIBED,
}

# The precedence ladder: an event moves a delivery only to a higher rung.
RANK = {
    State.SENDING: 0,
    State.UNKNOWN: 0,
    State.FAILED: 0,
    State.ACCEPTED: 1,
    State.DEFERRED: 2,
    State.DELIVERED: 3,
    State.BOUNCED: 4,
    State.DROPPED: 4,
    State.BLOCKED: 4,
    State.SPAMREPORT: 5,
    State.UNSUBSCRIBED: 5,
}


def moves_up(current: str, new: str) -> bool:
    """True if a delivery in state `current` should now be recorded as `new`."""
    if current not in RANK or new not in RANK:
        return False
    return RANK[State(new)] > RANK[State(current)]
