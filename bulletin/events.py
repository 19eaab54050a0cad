"""SendGrid delivery events: parse them, map them to deliveries, apply them to the tracking DB.

Events reach us twice over: posted to `bulletin events serve` (bulletin/web/webhook.py), or
downloaded and loaded with `bulletin events import FILE`. Both end in `apply_events`, which
handles one batch in one short transaction, so a `bulletin send` running in another process
only ever waits milliseconds for the database.

Rules (issue 5):
- An event maps to a delivery by the custom_args every send attaches (`bulletin_send`,
  `bulletin_delivery`, top-level keys of the event). Without them, by `sg_message_id` (its
  part before the first "." is the X-Message-Id we stored; one request, and so one id, covers
  up to 1,000 recipients, so the address picks among them), never by the address alone: an
  event with neither is another app's on the same SendGrid account, kept unmatched, and it
  changes no delivery and no suppression (issue 12). The fallback starts from the address's
  few deliveries, an index lookup; an event with no address matches by `sg_message_id` only
  if exactly one delivery has it. Custom args that name no delivery of this database (another
  installation, a deleted database) are not guessed at, and test copies (`bulletin_test`)
  belong to no delivery: such events are kept unmatched.
- Duplicates (same `sg_event_id`; SendGrid retries) are ignored. An event without an id gets
  one made from a hash of its content, so replaying it is ignored too.
- Events arrive out of order, so a state only ever moves up this ladder:
  sending/unknown/failed < accepted (processed) < deferred < delivered
  < bounced = dropped = blocked < spamreport = unsubscribed.
  A bounce after `delivered` wins: mailbox providers do bounce asynchronously after accepting,
  and the bounce is the more useful truth. `delivered` never overwrites a bounce. Equal ranks
  keep the first outcome recorded. `pending` rows are never changed (they were not sent).
  `open` and `click` only set flags and first/last times.
- Hard bounces (type "bounce", not "blocked"), drops for a bounced/invalid/unsubscribed/spam-
  reporting address, spam reports and unsubscribes put the address on the suppression list,
  if the event matched a delivery or carries bulletin's custom_args.
- Events that match no delivery are still stored (delivery_id NULL) and counted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bulletin.errors import InputError, Problem
from bulletin.ledger.keys import UNSUBSCRIBE_SOURCE, utcnow
from bulletin.ledger.states import RANK, STATE_FOR_EVENT, State, moves_up

if TYPE_CHECKING:
    from bulletin.ledger.store import Ledger as Tracker

BATCH_SIZE = 5000
MAX_PROBLEMS = 100  # listed; the rest are only counted
MAX_REASON = 1000
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z

__all__ = ["RANK", "STATE_FOR_EVENT", "moves_up"]  # the ladder lives in ledger/states.py
# SendGrid's `dropped` reasons that say the address itself must not be mailed again; others
# ("Invalid SMTPAPI header", "Spam Content") are about the message, not the address.
_SUPPRESSING_DROPS = re.compile(
    r"^\s*(bounced address|unsubscribed address|spam reporting address|invalid( address| email)?"
    r"\s*$)",
    re.IGNORECASE,
)


@dataclass(slots=True)
class Event:
    """One SendGrid event, with what we need to apply it; `payload` is its JSON text."""

    kind: str
    sg_event_id: str
    email: str
    timestamp: int | None
    send_id: int | None
    delivery_id: int | None
    message_id: str | None
    reason: str | None
    bounce_type: str
    payload: str
    has_custom_args: bool = False
    test_copy: bool = False
    group: str = ""

    @property
    def state(self) -> str | None:
        """The delivery state this event records, if any."""
        if self.kind == "bounce":
            return State.BLOCKED if self.bounce_type == "blocked" else State.BOUNCED
        return STATE_FOR_EVENT.get(self.kind)

    def suppression(self) -> str | None:
        """The reason to put the address on the do-not-send list, or None."""
        reason = (self.reason or "").strip()
        if self.kind == "bounce" and self.bounce_type != "blocked":
            return f"hard bounce: {reason}" if reason else "hard bounce"
        if self.kind == "dropped" and _SUPPRESSING_DROPS.match(reason):
            return f"dropped by SendGrid: {reason}"
        if self.kind == "spamreport":
            return "spam report"
        if self.kind == "unsubscribe":
            return "unsubscribed (SendGrid)"
        if self.kind == "group_unsubscribe":
            return "unsubscribed from SendGrid group" + (f" {self.group}" if self.group else "")
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= 10**15 else None  # SQLite integers stop at 2**63
    if isinstance(value, str) and value.isdigit() and len(value) <= 15:
        return int(value)
    return None


def _timestamp(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    # A time a datetime can hold (1e308, 10**30 or NaN would fail later, as a 500; issue 8).
    if isinstance(value, int | float) and 0 <= value <= MAX_TIMESTAMP:
        return int(value)
    return None


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]", re.ASCII)


def _has_surrogate(obj: Any, depth: int = 0) -> bool:
    """True if a string anywhere in a decoded event holds a lone surrogate (`"\udc80"`)."""
    if isinstance(obj, str):
        return bool(_SURROGATE.search(obj))
    if depth > 50:
        return True  # nested this deep is not an event either
    if isinstance(obj, dict):
        return any(_has_surrogate(k) or _has_surrogate(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_surrogate(v, depth + 1) for v in obj)
    return False


def parse_event(obj: Any, payload: str | None = None) -> Event:
    """An `Event` from one decoded JSON value; ValueError saying why it is not an event."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected an event object, found {type(obj).__name__}")
    # A lone surrogate cannot be stored or hashed as UTF-8: one such event used to lose the
    # whole post (a 500) or stop an import (issue 12). It is skipped and counted instead.
    if (payload is None or _SURROGATE_ESCAPE.search(payload)) and _has_surrogate(obj):
        raise ValueError(
            "an event with an invalid character (a lone UTF-16 surrogate) or nested too deeply"
        )
    kind = obj.get("event")
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError('an event object without an "event" type')
    if payload is None:
        payload = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    event_id = obj.get("sg_event_id")
    if not isinstance(event_id, str) or not event_id:
        canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        event_id = "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    email = obj.get("email")
    message_id = obj.get("sg_message_id")
    reason = obj.get("reason")
    if not isinstance(reason, str) or not reason:
        reason = obj.get("response")
    bounce_type = obj.get("type")
    group = obj.get("asm_group_id")
    return Event(
        kind=kind.strip().lower(),
        sg_event_id=event_id,
        email=email.strip() if isinstance(email, str) else "",
        timestamp=_timestamp(obj.get("timestamp")),
        send_id=_int(obj.get("bulletin_send")),
        delivery_id=_int(obj.get("bulletin_delivery")),
        message_id=(message_id.split(".", 1)[0] or None) if isinstance(message_id, str) else None,
        reason=reason[:MAX_REASON] if isinstance(reason, str) and reason else None,
        bounce_type=bounce_type.strip().lower() if isinstance(bounce_type, str) else "",
        payload=payload,
        has_custom_args="bulletin_delivery" in obj or "bulletin_send" in obj,
        test_copy="bulletin_test" in obj,
        group=str(group) if isinstance(group, int | str) and not isinstance(group, bool) else "",
    )


class NotAnArray(ValueError):
    """The body is JSON, but not an array."""


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def array_items(body: bytes) -> list[tuple[Any, str]]:
    """(value, its text) of each element of a posted JSON array, read as `json.loads` would.

    The text of each element is kept as sent, so it is stored as the event's payload without
    encoding it again, and a string can only hold a lone surrogate where the text has a
    `\\uD8xx` escape: `parse_event` walks an event for one only then (a post's events took
    twice as long to parse with the walk and the re-encoding; bench/webhook_apply.py).
    ValueError if the body is not JSON (RecursionError if nested too deeply), `NotAnArray` if
    it is JSON but not an array.
    """
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    space = _JSON_SPACE.match
    pos = space(text, 0).end()
    if not text.startswith("[", pos):
        value = json.loads(text)  # ValueError if it is not JSON at all
        raise NotAnArray(f"expected a JSON array, found {type(value).__name__}")
    items: list[tuple[Any, str]] = []
    pos = space(text, pos + 1).end()
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            value, end = _DECODER.raw_decode(text, pos)
            items.append((value, text[pos:end]))
            pos = end if text.startswith(",", end) else space(text, end).end()  # "," is usual
            if text.startswith(",", pos):
                pos = space(text, pos + 1).end()
            elif text.startswith("]", pos):
                pos += 1
                break
            else:
                raise ValueError(f"expected ',' or ']' at character {pos}")
    if space(text, pos).end() != len(text):
        raise ValueError(f"extra data at character {pos}")
    return items


@dataclass
class Tally:
    """What a batch (or a whole import) did."""

    received: int = 0
    applied: int = 0  # new events matched to a delivery
    duplicates: int = 0
    unknown: int = 0  # new events for no known delivery, stored unmatched
    changed: int = 0  # deliveries whose state changed
    suppressed: int = 0  # addresses newly added to the suppression list
    problems: list[Problem] = field(default_factory=list)
    malformed: int = 0

    def add(self, other: Tally) -> None:
        self.received += other.received
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.unknown += other.unknown
        self.changed += other.changed
        self.suppressed += other.suppressed

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "unknown": self.unknown,
            "changed": self.changed,
            "suppressed": self.suppressed,
            "malformed": self.malformed,
        }


def iso(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@dataclass(slots=True)
class _Target:
    id: int
    email: str
    state: str
    error: str | None = None
    changed: bool = False


def _match(tracker: Tracker, events: Sequence[Event]) -> tuple[list[_Target | None], dict]:
    """The delivery each event belongs to (None if unknown), fetched in a few queries."""
    targets: dict[int, _Target] = {}

    def target(row) -> _Target:
        found = targets.get(row.id)
        if found is None:
            found = targets[row.id] = _Target(row.id, row.email, row.state)
        return found

    by_id = {r.id: r for r in tracker.event_targets("id", (e.delivery_id for e in events))}
    matched: list[_Target | None] = [None] * len(events)
    fallback: list[int] = []
    for index, event in enumerate(events):
        if event.test_copy:
            continue
        if event.has_custom_args:
            row = by_id.get(event.delivery_id) if event.delivery_id is not None else None
            if (
                row is not None
                and (event.send_id is None or row.send_id == event.send_id)
                and (not event.email or row.email_key == event.email.lower())
            ):
                matched[index] = target(row)
            continue
        fallback.append(index)
    if not fallback:
        return matched, targets
    # By address (an index lookup, a few rows each), using sg_message_id to pick the send.
    with_address = [i for i in fallback if events[i].email]
    candidates: dict[str, list] = {}
    for row in tracker.event_targets("email_key", (events[i].email.lower() for i in with_address)):
        candidates.setdefault(row.email_key, []).append(row)
    for index in with_address:
        event = events[index]
        rows = candidates.get(event.email.lower(), [])
        row = None
        if event.message_id:
            row = next((r for r in rows if r.message_id == event.message_id), None)
        # No address-only fallback (issue 12): an event without bulletin's custom_args and
        # with no sg_message_id of ours is another app's or another list's on the same
        # SendGrid account, and must not change bulletin's deliveries or suppressions.
        if row is not None:
            matched[index] = target(row)
    # No address at all: the message id alone, if it names exactly one delivery.
    bare = [i for i in fallback if not events[i].email and events[i].message_id]
    if bare:
        only: dict[str, Any] = {}
        for row in tracker.event_targets("message_id", (events[i].message_id for i in bare)):
            only[row.message_id] = None if row.message_id in only else row
        for index in bare:
            row = only.get(events[index].message_id)
            if row is not None:
                matched[index] = target(row)
    return matched, targets


def _id(row) -> int:
    return row.id


def apply_events(tracker: Tracker, events: Sequence[Event], *, now: str | None = None) -> Tally:
    """Record a batch of events and what they mean, in one transaction; returns the tally."""
    now = now or utcnow()
    tally = Tally(received=len(events))
    with tracker.transaction():
        _apply(tracker, events, now, tally)
    return tally


def _apply(tracker: Tracker, events: Sequence[Event], now: str, tally: Tally) -> None:
    unique, ids = [], set()  # one of each id, the first (SendGrid retries within a post too)
    for event in events:
        if event.sg_event_id not in ids:
            ids.add(event.sg_event_id)
            unique.append(event)
    matched, targets = _match(tracker, unique)
    # People erased by `bulletin forget` (issue 8): a late event keeps its type and time only.
    forgotten = tracker.forgotten_hashes()
    rows: list[tuple] = []
    hiding: list[bool] = []
    for event, target in zip(unique, matched, strict=True):
        hidden = (target is not None and not target.email) or bool(
            forgotten and event.email and tracker.hashes(event.email) & forgotten
        )
        hiding.append(hidden)
        rows.append(
            (
                event.sg_event_id,
                target.id if target else None,
                event.kind,
                None if hidden else event.email or (target.email if target else None),
                event.timestamp,
                None if hidden else event.reason,
                "{}" if hidden else event.payload,
                now,
            )
        )
    # Stored first: only the events new to the database count and move anything (SendGrid's
    # retries, or another process applying the same post, are duplicates).
    new = tracker.insert_new_events(rows)
    tally.duplicates += len(events) - len(new)
    engagement: dict[str, dict[int, list[int]]] = {"open": {}, "click": {}}
    suppress: list[tuple[str, str, str]] = []
    for event, target, hidden in zip(unique, matched, hiding, strict=True):
        if event.sg_event_id not in new:
            continue
        reason = event.suppression()
        address = target.email if target else event.email
        if reason and "@" in address and (target is not None or event.has_custom_args):
            suppress.append((address, reason, "sendgrid"))
        if target is None:
            tally.unknown += 1
            continue
        tally.applied += 1
        state = event.state
        if state is not None and moves_up(target.state, state):
            target.state, target.error, target.changed = (
                state,
                None if hidden else event.reason,
                True,
            )
        elif event.kind in engagement and (when := event.timestamp) is not None:
            span = engagement[event.kind].setdefault(target.id, [when, when])
            span[0], span[1] = min(span[0], when), max(span[1], when)
    changed = [(t.state, t.error, now, t.id) for t in targets.values() if t.changed]
    opens, clicks = (
        [(iso(a), iso(b), i) for i, (a, b) in engagement[kind].items()]  # ISO sorts as numbers do
        for kind in ("open", "click")
    )
    tracker.record_events(changed, opens, clicks)
    tally.changed += len(changed)
    if suppress:
        tally.suppressed += tracker.suppress_many(suppress)


def unsubscribe_by_link(tracker: Tracker, delivery_id: int, *, now: str | None = None) -> bool:
    """A recipient used their signed link: suppress the address and record it at once.

    Returns True if the address was newly suppressed (False: it already was).
    """
    now = now or utcnow()
    with tracker.transaction():
        row = tracker.get_delivery(delivery_id)
        if row is None:
            return False
        added = tracker.suppress_many([(row.email, "unsubscribed via link", UNSUBSCRIBE_SOURCE)])
        if moves_up(row.state, State.UNSUBSCRIBED):
            tracker.set_states([(State.UNSUBSCRIBED, None, now, delivery_id)])
        payload = json.dumps(
            {
                "event": "unsubscribe",
                "source": "link",
                "bulletin_send": str(row.send_id),
                "bulletin_delivery": str(delivery_id),
            }
        )
        stamp = int(datetime.fromisoformat(now).timestamp())
        tracker.insert_events(
            [
                (
                    f"bulletin-unsubscribe:{delivery_id}",
                    delivery_id,
                    "unsubscribe",
                    row.email,
                    stamp,
                    "unsubscribed via link",
                    payload,
                    now,
                )
            ]
        )
        return added == 1


# --- reading a downloaded file ---------------------------------------------------------------

_GAP = re.compile("[ \t\r\n,\ufeff]*")  # whitespace, commas between elements, a stray BOM
_LINE_START = re.compile(r"\n[ \t\r]*([\[{])")
CHUNK = 1 << 20  # read 1 MB at a time; one event may be at most this big


def iter_json(
    handle: IO[str], name: str, *, chunk: int = CHUNK, lookahead: int = CHUNK
) -> Iterator[tuple[int, Any, str] | Problem]:
    """(line, value, its text) for each event in a JSON array or JSON-lines stream.

    Streams: never holds more than about two chunks. Accepts one array, several arrays, one
    object per line, or a mix. A malformed value is reported once as a `Problem` and
    skipped up to the next line that starts a new object or array.
    """
    decode = json.JSONDecoder().raw_decode
    buf, pos, line, eof, in_array = "", 0, 1, False, False

    def fill() -> None:
        nonlocal buf, pos, eof
        text = handle.read(chunk)
        eof = not text
        buf, pos = buf[pos:] + text, 0

    while True:
        while not eof and len(buf) - pos < lookahead:
            fill()
        gap = _GAP.match(buf, pos).end()
        if gap > pos:
            line += buf.count("\n", pos, gap)
            pos = gap
        if pos >= len(buf):
            if eof:
                return
            continue
        char = buf[pos]
        if char == "[" and not in_array:
            in_array, pos = True, pos + 1
            continue
        if char == "]" and in_array:
            in_array, pos = False, pos + 1
            continue
        try:
            value, end = decode(buf, pos)
        except (json.JSONDecodeError, RecursionError) as error:
            if isinstance(error, RecursionError):  # a 200,000-deep array (issue 12)
                at, detail = line, "nested too deeply"
            else:
                at = line + buf.count("\n", pos, error.pos)
                detail = error.msg if at == line else f"{error.msg} on line {at}"
            yield Problem(name, line, f"not valid JSON ({detail}); skipped to the next event")
            # Resynchronise on the next line that begins with "{" or "[".
            start = pos + 1
            while True:
                found = _LINE_START.search(buf, start)
                if found:
                    line += buf.count("\n", pos, found.start(1))
                    pos = found.start(1)
                    in_array = in_array and found.group(1) == "{"
                    break
                if eof:
                    return
                cut = buf.rfind("\n", start)  # keep a final newline: a line may start after it
                cut = cut if cut > 0 else len(buf)
                line += buf.count("\n", pos, cut)
                pos = cut
                fill()
                start = 0
            continue
        text = buf[pos:end]
        yield line, value, text
        line += text.count("\n")
        pos = end


def read_events(path: Path) -> Iterator[Event | Problem]:
    """Events from a downloaded file (`.gz` too), with a `Problem` for each bad item."""
    opener: Callable[..., IO[str]] = gzip.open if path.suffix == ".gz" else open  # type: ignore[assignment]
    try:
        handle = opener(path, "rt", encoding="utf-8-sig", errors="replace")
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror or error})") from None
    with handle:
        try:
            for item in iter_json(handle, str(path)):
                if isinstance(item, Problem):
                    yield item
                    continue
                line, value, text = item
                try:
                    yield parse_event(value, text)
                except ValueError as error:
                    yield Problem(str(path), line, str(error))
        except (OSError, EOFError) as error:
            raise InputError(f"{path}: cannot read it ({error})") from None


def batched(items: Iterable[Event | Problem], size: int, tally: Tally) -> Iterator[list[Event]]:
    """Events in lists of `size`; problems go to `tally` as they pass."""
    batch: list[Event] = []
    for item in items:
        if isinstance(item, Problem):
            tally.malformed += 1
            if len(tally.problems) < MAX_PROBLEMS:
                tally.problems.append(item)
            continue
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_events(
    tracker: Tracker,
    path: Path,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[Tally], None] = lambda tally: None,
) -> Tally:
    """Load a downloaded events file, committing every `batch_size` events; re-runnable."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    tally = Tally()
    # An import can always be run again (duplicates are ignored), so it need not wait for the
    # disk on every commit (WAL keeps the database consistent either way); a bigger page cache
    # and fewer, larger checkpoints halve its time (bench/events_bench.py).
    with tracker.bulk_import():
        for batch in read_ahead(batched(read_events(path), batch_size, tally)):
            tally.add(apply_events(tracker, batch))
            progress(tally)
    return tally


def read_ahead(batches: Iterator[list[Event]], depth: int = 2) -> Iterator[list[Event]]:
    """`batches`, read and parsed in a thread up to `depth` batches ahead of the caller.

    Parsing the file is Python work and applying a batch is mostly waiting for the database, so
    the two overlap; the queue is bounded, so memory stays flat. The reader's errors (a file
    that cannot be read) are raised here; if the caller stops early, the reader stops too.
    """
    import queue
    import threading

    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(end)
        except BaseException as error:  # handed to the caller, raised there
            put(error)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # the file is closed now, not when the generator is collected

    reader = threading.Thread(target=read, name="events-reader", daemon=True)
    reader.start()
    try:
        while (item := ready.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def describe(tally: Tally) -> str:
    """One line saying what an import or a post did."""
    return (
        f"{tally.received:,} event(s): {tally.applied:,} applied, "
        f"{tally.duplicates:,} duplicate(s) ignored, "
        f"{tally.unknown:,} for unknown deliveries (kept), "
        f"{tally.changed:,} delivery state(s) changed, "
        f"{tally.suppressed:,} address(es) added to the suppression list"
        + (f", {tally.malformed:,} malformed item(s) skipped" if tally.malformed else "")
    )
