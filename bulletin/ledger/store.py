"""The delivery ledger: every read and write of delivery state, on SQLAlchemy Core.

One `Ledger` per process (or per thread's use); `open_ledger(db)` opens it and brings a SQLite
file to the newest schema on first use. Each operation is one transaction named by what it
does; a caller that needs several in one transaction (events, forget) wraps them in
`ledger.transaction()`, and the helpers join it. Results are dataclasses (`SendRow`,
`DeliveryRow`, `Counts`, `Suppression`, …), never driver rows.

Bulk work stays bulk: recipients are queued with one `executemany` per 10,000 (PostgreSQL:
COPY), outcomes are written grouped by (state, message id, error) — a SendGrid batch of 1,000
shares one `X-Message-Id`, so it is usually one UPDATE, its ids one parameter — and a claim is
one UPDATE … RETURNING on PostgreSQL, one SELECT and one UPDATE on SQLite.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError

from bulletin.errors import DatabaseError, InputError
from bulletin.ledger import schema
from bulletin.ledger.engine import describe, explain, make_engine, transaction
from bulletin.ledger.keys import (
    FORGET_REASON,
    FORGET_SOURCE,
    email_hash,
    email_hashes,
    email_key,
    keyed_hash,
    purged_text,
    utcnow,
)
from bulletin.ledger.legacy import SCHEMA_VERSION
from bulletin.ledger.states import (
    DELIVERED,
    FAILURES,
    NOT_ARRIVED,
    OPEN,
    SENT,
    UNSUBSCRIBED,
    Cause,
    State,
)

CHUNK = 10_000  # rows per executemany: memory stays flat for any audience
IN_CHUNK = 500  # values per IN (…)
ANALYZE_AFTER = 10_000  # PostgreSQL: rows queued at once after which `deliveries` is analysed
RETRIES = 8  # a batch's transaction is run again this often after a lost PostgreSQL connection
STALE_ERROR = "the sending process stopped before the transport answered"
LEFT_ERROR = "left the audience; not sent"
# Columns of `deliveries` that came from a contact list, blanked by `forget`.
PERSONAL = {
    "email": "",
    "first_name": "",
    "last_name": "",
    "ward": "",
    "error": None,
    "fields": None,
}

D = schema.deliveries
S = schema.sends
E = schema.events
X = schema.suppressions
P = schema.purged_sends
N = schema.run_notices
L = schema.leases


def lease_time(offset: float = 0.0) -> str:
    """Now (plus `offset` seconds) as a lease stores it: ISO 8601 UTC with milliseconds, always,
    so lease times compare as text. Hosts sharing a database keep their clocks in step (NTP)."""
    return (datetime.now(UTC) + timedelta(seconds=offset)).isoformat(timespec="milliseconds")


def _retried(method):
    """A ledger operation that is right however often it runs: on PostgreSQL it is run again
    on a new connection when the connection is lost (`Ledger.again`)."""

    @functools.wraps(method)
    def retried(self, *args, **kwargs):
        return self.again(lambda _attempt: method(self, *args, **kwargs))

    return retried


# --- typed results ---------------------------------------------------------------------------


class _Fields:
    """Rows also read as `row["column"]`, as the sqlite3 rows they replace did."""

    def __getitem__(self, name: str):
        return getattr(self, name)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]  # type: ignore[arg-type]


@dataclass(frozen=True)
class SendRow(_Fields):
    id: int
    message: str
    path: str
    subject: str
    reference: str
    category: str
    content_hash: str
    transport: str
    created_at: str
    completed_at: str | None
    open_tracking: int | None = None
    click_tracking: int | None = None


@dataclass(frozen=True)
class DeliveryRow(_Fields):
    id: int
    send_id: int
    email: str
    email_key: str
    first_name: str
    last_name: str
    ward: str
    state: str
    message_id: str | None
    error: str | None
    created_at: str
    updated_at: str
    opened: int
    clicked: int
    first_opened_at: str | None
    last_opened_at: str | None
    first_clicked_at: str | None
    last_clicked_at: str | None
    cause: str | None = None
    lease: str | None = None  # the holder that claimed it (revision 0005)
    fields: str | None = None  # JSON of its merge values (revision 0006)

    @property
    def suppressed(self) -> bool:
        """Dropped by bulletin because the address was on the do-not-send list."""
        return self.state == State.DROPPED and self.cause == Cause.SUPPRESSED


class Holder(NamedTuple):
    """A process with a lease on a send: `live` until `expires_at` passes unrenewed."""

    holder: str
    host: str
    pid: int
    expires_at: str
    live: bool


class Claimed(NamedTuple):
    """A recipient row a claim moved to `sending` (a tuple: a batch makes 1,000 of them)."""

    id: int
    email: str
    email_key: str
    fields: str | None = None  # JSON of its other merge values ("": none; None: before 0006)
    first_name: str = ""
    last_name: str = ""
    ward: str = ""


# `Claimed._make` without a Python call per row: the sending thread shares the GIL with the
# request threads, and gives it up every few milliseconds while it runs Python code.
_claimed = partial(tuple.__new__, Claimed)


@dataclass(frozen=True)
class Suppression(_Fields):
    email_hash: str
    email: str | None
    reason: str
    source: str
    created_at: str


@dataclass(frozen=True)
class WardCount(_Fields):
    ward: str
    recipients: int
    sent: int
    delivered: int
    bounced: int
    unsubscribed: int
    opened: int
    clicked: int


@dataclass(frozen=True)
class Failure(_Fields):
    state: str
    error: str | None
    cause: str | None = None


@dataclass(frozen=True)
class FirstEvent(_Fields):
    delivery_id: int
    event: str
    timestamp: int


@dataclass(frozen=True, eq=False)
class Counts(Mapping):
    """Recipients of one send per state, with the opened / clicked totals.

    Reads as a mapping too (`counts["pending"]`), keyed by state name, "opened", "clicked".
    """

    by_state: dict[str, int]
    opened: int = 0
    clicked: int = 0

    def __getitem__(self, key: str) -> int:
        if key == "opened":
            return self.opened
        if key == "clicked":
            return self.clicked
        return self.by_state[key]

    def __iter__(self) -> Iterator[str]:
        return iter([*self.by_state, "opened", "clicked"])

    def __len__(self) -> int:
        return len(self.by_state) + 2

    def of(self, states: Iterable[str]) -> int:
        """How many recipients are in any of `states`."""
        return sum(self.by_state.get(s, 0) for s in states)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


@dataclass
class ForgetCounts:
    deliveries: int = 0
    sends: int = 0
    events: int = 0
    newly_suppressed: bool = False
    delivery_ids: tuple[int, ...] = ()
    keyed: bool = False  # the hash kept is HMAC-SHA256 under BULLETIN_SECRET


@dataclass
class PurgeCounts:
    sends: list[int]
    deliveries: int = 0
    events: int = 0


def _outcome(item) -> tuple[int, str, str | None, str | None]:
    """(delivery id, state, message id, error) from a transport Outcome or such a tuple."""
    if hasattr(item, "delivery_id"):
        return item.delivery_id, item.state, item.message_id, item.error
    return tuple(item)  # type: ignore[return-value]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class EventTarget(NamedTuple):
    """What applying an event needs of the delivery it may name."""

    id: int
    send_id: int
    email: str
    email_key: str
    state: str
    message_id: str | None


def _array(name: str):
    """A PostgreSQL array parameter for `= ANY(…)`: ids are bigint, the rest text."""
    from sqlalchemy.dialects.postgresql import ARRAY

    return bindparam(name, type_=ARRAY(BigInteger() if name == "id" else Text()))


_compiled: dict[tuple[str, str], tuple[str, Callable | None]] = {}


def _executemany(c: Connection, key: str, build: Callable, names: Sequence[str], rows: list[tuple]):
    """Run the statement `build()` makes once per row (tuples in `names` order), by the
    driver's executemany."""
    sql, pick = _prepared(c.dialect, key, build, names)
    return c.exec_driver_sql(sql, rows if pick is None else list(map(pick, rows)))


def _prepared(dialect, key: str, build: Callable, names: Sequence[str]):
    """(SQL, how to order a row's values) for `build()`'s statement: built and compiled once per
    process and dialect (cached under `key`). SQLite's positional parameters are put in the
    statement's order, repeated names included."""
    cached = _compiled.get((key, dialect.name))
    if cached is None:
        compiled = build().compile(dialect=dialect)
        if not compiled.positional:
            raise ValueError("only positional (SQLite) statements run this way")
        order = list(compiled.positiontup or ())
        index = [names.index(n) for n in order]
        pick = None if order == list(names) else itemgetter(*index)
        if pick is not None and len(index) == 1:  # itemgetter of one index gives no tuple
            pick = partial(_one, index[0])
        cached = _compiled[(key, dialect.name)] = (str(compiled), pick)
    return cached


def _one(index: int, row: tuple) -> tuple:
    return (row[index],)


def _columns(rows: list[tuple], width: int) -> tuple[list, ...]:
    """Rows as `width` column lists: PostgreSQL takes each as one array for `unnest`."""
    return tuple(map(list, zip(*rows, strict=True))) if rows else ([],) * width


def _set_states_statement():
    return (
        update(D)
        .where(D.c.id == bindparam("b_id"))
        .values(
            state=bindparam("b_state"), error=bindparam("b_error"), updated_at=bindparam("b_at")
        )
    )


def _mark_engagement_statement(column: str):
    """Set `column` (opened / clicked); widen its first/last times to (b_first, b_last)."""
    first, last = D.c[f"first_{column}_at"], D.c[f"last_{column}_at"]
    earlier = or_(first.is_(None), first > bindparam("b_first"))
    later = or_(last.is_(None), last < bindparam("b_last"))
    return (
        update(D)
        .where(D.c.id == bindparam("b_id"))
        .values(
            {
                column: literal_column("1"),
                first.name: case((earlier, bindparam("b_first")), else_=first),
                last.name: case((later, bindparam("b_last")), else_=last),
            }
        )
    )


EVENT_COLUMNS = ("sg_event_id", "delivery_id", "event", "email", "timestamp", "reason")
EVENT_COLUMNS += ("payload", "received_at")  # a row of `insert_events`


def _insert_events_statement():
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    values = {n: bindparam(n) for n in EVENT_COLUMNS}
    return sqlite_insert(E).on_conflict_do_nothing().values(values)


# key → (key, statement builder, the names of a row's values in order): `_executemany`'s
# arguments for the event path on SQLite.
SQLITE_EVENT_STATEMENTS = {
    "insert_events": (
        "insert_events",
        _insert_events_statement,
        EVENT_COLUMNS,
    ),
    "set_states": ("set_states", _set_states_statement, ("b_state", "b_error", "b_at", "b_id")),
    **{
        f"mark_{column}": (
            f"mark_{column}",
            partial(_mark_engagement_statement, column),
            ("b_first", "b_last", "b_id"),
        )
        for column in ("opened", "clicked")
    },
}


def _pending_rows(c: Connection, send_id: int, page: int = 10_000) -> Iterator[Any]:
    """(id, email_key) of a send's pending rows, read a page at a time: a million-row send's
    are never all in memory (issue 13)."""
    after = 0
    while True:
        rows = c.execute(
            select(D.c.id, D.c.email_key)
            .where(D.c.send_id == send_id, D.c.state == State.PENDING, D.c.id > after)
            .order_by(D.c.id)
            .limit(page)
        ).all()
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].id


def _merge_values(fields: Sequence[str]) -> Callable[[Any], str]:
    """A contact → JSON of its non-empty values of `fields`, the merge values its row's own
    columns (names, ward) do not hold; "" when there are none (most messages)."""
    if not fields:
        return lambda contact: ""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    keys = tuple(fields)

    def merge(contact) -> str:
        get = contact.fields.get
        return dumps({key: value for key in keys if (value := get(key))})

    return merge


def _copy_recipients(
    c: Connection, send_id: int, contacts: Iterable, now: str, merge: Callable[[Any], str | None]
) -> int:
    """PostgreSQL's queueing: COPY the audience into a temporary table (streamed, so memory
    stays flat), then one INSERT … SELECT … ON CONFLICT DO NOTHING. Row by row, even pipelined,
    100,000 recipients took seconds longer (bench/ledger_insert.py, docs/ledger-plan.md §7).
    Ids follow the list's order, and the first of two rows for one address wins, as on SQLite.
    """
    cursor = c.connection.driver_connection.cursor()
    try:
        cursor.execute(PG_INCOMING)
        with cursor.copy(PG_COPY_INCOMING) as copy:
            for position, p in enumerate(contacts):
                copy.write_row(
                    (
                        position,
                        p.email,
                        p.email.lower(),
                        p.first_name,
                        p.last_name,
                        p.get("ward"),
                        merge(p),
                    )
                )
        cursor.execute(PG_QUEUE_INCOMING, (send_id, now, now))
        added = max(cursor.rowcount, 0)
        cursor.execute("DROP TABLE incoming_recipients")
        if added >= ANALYZE_AFTER:
            # Statistics taken before these rows would have the claims scan every pending row
            # (docs/ledger-plan.md); autovacuum would see to them only later.
            cursor.execute("ANALYZE deliveries")
    finally:
        cursor.close()
    return added


PG_INCOMING = """
CREATE TEMPORARY TABLE incoming_recipients (
    position bigint, email text, email_key text, first_name text, last_name text, ward text,
    fields text
) ON COMMIT DROP
"""
PG_COPY_INCOMING = """
COPY incoming_recipients (position, email, email_key, first_name, last_name, ward, fields)
FROM STDIN
"""
PG_QUEUE_INCOMING = """
INSERT INTO deliveries (send_id, email, email_key, first_name, last_name, ward, fields,
                        created_at, updated_at)
SELECT %s, email, email_key, first_name, last_name, ward, fields, %s, %s
FROM incoming_recipients ORDER BY position
ON CONFLICT DO NOTHING
"""


# A whole event batch in one statement each on PostgreSQL: arrays in, `unnest` to rows.
PG_INSERT_EVENTS = """
INSERT INTO events (sg_event_id, delivery_id, event, email, "timestamp", reason, payload,
                    received_at)
SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::text[], %b::bigint[], %b::text[],
                     %b::text[], %b::text[])
ON CONFLICT (sg_event_id) DO NOTHING
"""
RETURNING_ID = "RETURNING sg_event_id"
PG_SET_STATES = """
UPDATE deliveries AS d SET state = v.state, error = v.error, updated_at = v.at
FROM unnest(%b::text[], %b::text[], %b::text[], %b::bigint[]) AS v(state, error, at, id)
WHERE d.id = v.id
"""
PG_RECORD_EVENTS = """
UPDATE deliveries AS d SET
    state = COALESCE(v.state, d.state),
    error = CASE WHEN v.state IS NULL THEN d.error ELSE v.error END,
    updated_at = COALESCE(v.at, d.updated_at),
    opened = CASE WHEN v.open_lo IS NULL THEN d.opened ELSE 1 END,
    first_opened_at = CASE WHEN d.first_opened_at IS NULL OR d.first_opened_at > v.open_lo
                           THEN COALESCE(v.open_lo, d.first_opened_at) ELSE d.first_opened_at END,
    last_opened_at = CASE WHEN d.last_opened_at IS NULL OR d.last_opened_at < v.open_hi
                          THEN COALESCE(v.open_hi, d.last_opened_at) ELSE d.last_opened_at END,
    clicked = CASE WHEN v.click_lo IS NULL THEN d.clicked ELSE 1 END,
    first_clicked_at = CASE WHEN d.first_clicked_at IS NULL OR d.first_clicked_at > v.click_lo
                            THEN COALESCE(v.click_lo, d.first_clicked_at)
                            ELSE d.first_clicked_at END,
    last_clicked_at = CASE WHEN d.last_clicked_at IS NULL OR d.last_clicked_at < v.click_hi
                           THEN COALESCE(v.click_hi, d.last_clicked_at) ELSE d.last_clicked_at END
FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
            %b::text[]) AS v(id, state, error, at, open_lo, open_hi, click_lo, click_hi)
WHERE d.id = v.id
"""
PG_MARK_ENGAGEMENT = """
UPDATE deliveries AS d SET {column} = 1,
    first_{column}_at = CASE WHEN d.first_{column}_at IS NULL OR d.first_{column}_at > v.lo
                             THEN v.lo ELSE d.first_{column}_at END,
    last_{column}_at = CASE WHEN d.last_{column}_at IS NULL OR d.last_{column}_at < v.hi
                            THEN v.hi ELSE d.last_{column}_at END
FROM unnest(%b::text[], %b::text[], %b::bigint[]) AS v(lo, hi, id)
WHERE d.id = v.id
"""

# The sending thread's statements: a batch is claimed, recorded and its lease renewed in a
# handful of driver calls with constant texts (each driver prepares them once). Every call
# gives up the GIL and must win it back from the request threads building JSON, so fewer,
# bigger calls cost the send less than SQLAlchemy's one bind parameter per id did.
SQLITE_PICK = """
SELECT json_group_array(json_array(id, email, email_key, fields, first_name, last_name, ward))
FROM (
    SELECT id, email, email_key, fields, first_name, last_name, ward FROM deliveries
    WHERE send_id = ? AND state = ? AND id > ? ORDER BY id LIMIT ?)
"""
# Under BEGIN IMMEDIATE, the pending rows in (after, last] are exactly those SQLITE_PICK read.
SQLITE_TAKE = """
UPDATE deliveries SET state = ?, updated_at = ?, lease = ?
WHERE send_id = ? AND state = ? AND id > ? AND id <= ?
"""
PG_CLAIM = """
UPDATE deliveries SET state = %s, updated_at = %s, lease = %s
WHERE id = ANY(ARRAY(
    SELECT id FROM deliveries WHERE send_id = %s AND state = %s AND id > %s
    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED))
RETURNING id, email, email_key, fields, first_name, last_name, ward
"""
SQLITE_RECORD = """
UPDATE deliveries SET state = ?, message_id = COALESCE(?, message_id), error = ?, updated_at = ?
WHERE id IN (SELECT value FROM json_each(?)) AND state = ?
"""
PG_RECORD = """
UPDATE deliveries SET state = %s, message_id = COALESCE(%s, message_id), error = %s,
    updated_at = %s
WHERE id = ANY(%s::bigint[]) AND state = %s
"""
RENEW = """
INSERT INTO leases (send_id, holder, host, pid, acquired_at, expires_at)
VALUES ({p}, {p}, {p}, {p}, {p}, {p})
ON CONFLICT (send_id, holder) DO UPDATE SET expires_at = excluded.expires_at
"""
SQLITE_RENEW, PG_RENEW = RENEW.format(p="?"), RENEW.format(p="%s")


# --- the ledger ------------------------------------------------------------------------------


class Ledger:
    """The one owner of the tracking database."""

    def __init__(self, engine: Engine, *, secret: str | None = None) -> None:
        self.engine = engine
        self.secret = secret or None  # BULLETIN_SECRET: keys the hashes `forget` keeps
        self.sqlite = engine.dialect.name == "sqlite"
        self.path = Path(str(engine.url.database)) if self.sqlite else Path(describe(engine))
        self._local = threading.local()
        self._renewed: dict[tuple[int, str], float] = {}  # (send, holder) → monotonic time

    def hashes(self, email: str) -> set[str]:
        """The digests a suppression of `email` may be stored under (plain, and keyed)."""
        return email_hashes(email, self.secret)

    # --- connections ---------------------------------------------------------------------

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _conn(self) -> Connection | None:
        return getattr(self._local, "connection", None)

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Connection]:
        """One transaction; operations called inside it join it. Failures: DatabaseError."""
        if self._conn is not None:
            yield self._conn
            return
        kept = self._kept() if getattr(self._local, "keep", False) else None
        try:
            with transaction(self.engine, write=write, kept=kept) as connection:
                self._local.connection = connection
                try:
                    yield connection
                finally:
                    self._local.connection = None
        except BaseException as error:
            if kept is not None:  # whatever state it was left in, the next one starts afresh
                self._drop_kept()
            if isinstance(error, DBAPIError):  # raised at commit, outside engine.transaction's
                raise explain(error, self.engine) from None
            raise

    @contextmanager
    def keeping_connection(self) -> Iterator[None]:
        """While the block lasts, this thread's transactions run on one connection (the sending
        thread's batches): no pool checkout, nor PostgreSQL's liveness ping, per batch. After a
        failed transaction (a lost connection: `again` runs it once more) it takes a new one."""
        if getattr(self._local, "keep", False):
            yield
            return
        self._local.keep = True
        try:
            yield
        finally:
            self._local.keep = False
            self._drop_kept()

    def _kept(self) -> Connection:
        kept = getattr(self._local, "kept", None)
        if kept is None:
            try:
                kept = self._local.kept = self.engine.connect()
            except DBAPIError as error:
                raise explain(error, self.engine) from None
        return kept

    def _drop_kept(self) -> None:
        kept, self._local.kept = getattr(self._local, "kept", None), None
        if kept is not None:
            with suppress(DBAPIError):
                kept.close()

    def _read(self):
        return self.transaction(write=False)

    def reading(self):
        """A read-only transaction (one snapshot); joins an enclosing one. For store classes."""
        return self._read()

    def insert_ignore(self, table):
        """INSERT … ON CONFLICT DO NOTHING on either back end. For store classes."""
        return self._insert_ignore(table)

    def _insert_ignore(self, table):
        """INSERT … ON CONFLICT DO NOTHING on either back end."""
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        return dialect_insert(table).on_conflict_do_nothing()

    # --- sends ---------------------------------------------------------------------------

    def latest_send(self, message: str) -> SendRow | None:
        with self._read() as c:
            row = c.execute(
                select(S).where(S.c.message == message).order_by(S.c.id.desc()).limit(1)
            ).first()
        return SendRow(**row._mapping) if row else None

    def get_send(self, send_id: int) -> SendRow | None:
        with self._read() as c:
            row = c.execute(select(S).where(S.c.id == send_id)).first()
        return SendRow(**row._mapping) if row else None

    def sends(self) -> list[SendRow]:
        with self._read() as c:
            return [SendRow(**r._mapping) for r in c.execute(select(S).order_by(S.c.id))]

    def create_send(
        self,
        *,
        message: str,
        path: str,
        subject: str,
        reference: str,
        category: str,
        content_hash: str,
        transport: str,
    ) -> int:
        """Start a new send of a message; returns its id."""
        with self.transaction() as c:
            result = c.execute(
                insert(S).values(
                    message=message,
                    path=path,
                    subject=subject,
                    reference=reference,
                    category=category,
                    content_hash=content_hash,
                    transport=transport,
                    created_at=utcnow(),
                )
            )
            return int(result.inserted_primary_key[0])

    def note_tracking(self, send_id: int, *, opens: bool, clicks: bool) -> None:
        """Record the tracking a run of this send asked for; on for any run stays on."""
        greatest = func.max if self.sqlite else func.greatest
        with self.transaction() as c:
            c.execute(
                update(S)
                .where(S.c.id == send_id)
                .values(
                    open_tracking=greatest(func.coalesce(S.c.open_tracking, 0), int(opens)),
                    click_tracking=greatest(func.coalesce(S.c.click_tracking, 0), int(clicks)),
                )
            )

    @_retried
    def complete_if_done(self, send_id: int) -> bool:
        """Mark the send completed once no recipient is pending or in flight."""
        with self.transaction() as c:
            open_ = c.execute(
                select(func.count())
                .select_from(D)
                .where(D.c.send_id == send_id, D.c.state.in_(list(OPEN)))
            ).scalar_one()
            if open_ == 0:
                c.execute(
                    update(S)
                    .where(S.c.id == send_id)
                    .values(completed_at=func.coalesce(S.c.completed_at, utcnow()))
                )
            return open_ == 0

    # --- queueing and claiming -----------------------------------------------------------

    def add_recipients(self, send_id: int, contacts: Iterable, fields: Sequence[str] = ()) -> int:
        """Queue the audience as pending; recipients already recorded are left as they are.

        `contacts` is read once, in chunks (a generator keeps a million-row send's memory
        flat). With `fields`, each row keeps those of its contact's values as JSON, what its
        copy is built from (`Claimed.fields`).
        """
        if self.is_purged(send_id):
            raise InputError(purged_text(send_id))
        now = utcnow()
        merge = _merge_values(fields)
        columns = (
            "send_id",
            "email",
            "email_key",
            "first_name",
            "last_name",
            "ward",
            "created_at",
            "updated_at",
            "fields",  # the table's order: the driver takes them positionally
        )
        statement = self._insert_ignore(D).values({name: bindparam(name) for name in columns})
        added = 0
        with self.transaction() as c:
            if not self.sqlite:
                return _copy_recipients(c, send_id, contacts, now, merge)
            # Straight to the driver's executemany with plain tuples: SQLAlchemy's per-row
            # parameter handling costs a third more on 100,000 rows (bench/ledger_insert.py).
            compiled = statement.compile(dialect=c.dialect)
            positional = bool(compiled.positional)
            assert not positional or tuple(compiled.positiontup or ()) == columns
            rows_of = (
                (
                    send_id,
                    p.email,
                    p.email.lower(),
                    p.first_name,
                    p.last_name,
                    p.get("ward"),
                    now,
                    now,
                    merge(p),
                )
                for p in contacts
            )
            # On the driver's cursor: a result of SQLAlchemy's keeps its chunk in a reference
            # cycle, which can outlive many chunks (a million-row send's memory, issue 13).
            cursor = c.connection.driver_connection.cursor()
            try:
                # A chunk's rows held, not its contacts, and not the chunk before (`_chunks`
                # would keep it while reading the next).
                while rows := list(islice(rows_of, CHUNK)):
                    params = (
                        rows if positional else [dict(zip(columns, r, strict=True)) for r in rows]
                    )
                    cursor.executemany(str(compiled), params)
                    added += max(cursor.rowcount, 0)
                    del rows, params  # before the next chunk is read: one chunk held, not two
            finally:
                cursor.close()
        return added

    queue = add_recipients

    def stale_to_unknown(self, send_id: int) -> list[str]:
        """Recipients left `sending` by a run that died: their fate is unknown. Call under lock."""
        where = and_(D.c.send_id == send_id, D.c.state == State.SENDING)
        with self.transaction() as c:
            emails = list(c.execute(select(D.c.email).where(where)).scalars())
            if emails:
                c.execute(
                    update(D)
                    .where(where)
                    .values(state=State.UNKNOWN, updated_at=utcnow(), error=STALE_ERROR)
                )
        return emails

    def unknown_to_pending(self, send_id: int, keys: set[str] | None = None) -> int:
        """`--resend-unknown`: unknown recipients (only those in `keys`, if given) go again."""
        with self.transaction() as c:
            rows = c.execute(
                select(D.c.id, D.c.email_key).where(
                    D.c.send_id == send_id, D.c.state == State.UNKNOWN
                )
            ).all()
            ids = [r.id for r in rows if keys is None or r.email_key in keys]
            now = utcnow()
            for chunk in _chunks(ids, IN_CHUNK):
                c.execute(
                    update(D)
                    .where(D.c.id.in_(chunk), D.c.state == State.UNKNOWN)
                    .values(state=State.PENDING, updated_at=now)
                )
            return len(ids)

    def remove_left(self, send_id: int, keys: Container[str]) -> int:
        """Delete the pending rows of people no longer in the audience (`keys`): never sent.

        A pending row records nothing that happened, only an intention; the person left the
        list before their turn came, so the send no longer owes them a copy (issue 11). If they
        come back, a later resume adds them again.
        """
        with self.transaction() as c:
            gone = [r.id for r in _pending_rows(c, send_id) if r.email_key not in keys]
            for chunk in _chunks(gone, IN_CHUNK):
                # A stray event matched by address pins a row (events.delivery_id): keep it.
                c.execute(
                    update(D)
                    .where(D.c.id.in_(chunk), exists().where(E.c.delivery_id == D.c.id))
                    .values(state=State.DROPPED, error=LEFT_ERROR, cause=Cause.LEFT)
                )
                c.execute(delete(D).where(D.c.id.in_(chunk), D.c.state == State.PENDING))
            return len(gone)

    def recipient_states(self, send_id: int) -> dict[str, State]:
        """email key → state, for every recipient row of a send: the ledger a resume reads."""
        with self._read() as c:
            return {
                key: State(state)
                for key, state in c.execute(
                    select(D.c.email_key, D.c.state).where(D.c.send_id == send_id)
                )
            }

    def is_purged(self, send_id: int) -> bool:
        with self._read() as c:
            return c.execute(select(P.c.send_id).where(P.c.send_id == send_id)).first() is not None

    def drop_suppressed(self, send_id: int) -> int:
        """Pending recipients who have since been suppressed are dropped, never sent."""
        with self.transaction() as c:
            reasons = dict(c.execute(select(X.c.email_hash, X.c.reason)).all())
            if not reasons:
                return 0
            grouped: dict[str, list[int]] = defaultdict(list)
            for row in _pending_rows(c, send_id):
                found = [reasons[h] for h in self.hashes(row.email_key) if h in reasons]
                if found:
                    grouped[found[0]].append(row.id)
            now = utcnow()
            for reason, ids in grouped.items():
                for chunk in _chunks(ids, IN_CHUNK):
                    c.execute(
                        update(D)
                        .where(D.c.id.in_(chunk))
                        .values(
                            state=State.DROPPED,
                            cause=Cause.SUPPRESSED,
                            error=f"suppressed: {reason}",
                            updated_at=now,
                        )
                    )
            return sum(len(ids) for ids in grouped.values())

    # --- leases: who is sending a send (docs/ledger-plan.md, "Claims and leases") ---------

    def serialise_message(self, message: str) -> None:
        """Inside a transaction: until it ends, no other process creates or resumes a send of
        `message` (PostgreSQL: a transaction advisory lock; SQLite's BEGIN IMMEDIATE already
        serialises writers). Two processes starting together then join one send."""
        if self.sqlite:
            return
        with self.transaction() as c:
            c.execute(select(func.pg_advisory_xact_lock(MESSAGE_LOCK, func.hashtext(message))))

    def _renew(self, c: Connection, send_id: int, lease) -> None:
        """Take or renew `lease` (holder, host, pid, seconds) on a send."""
        values = (send_id, lease.holder, lease.host, lease.pid, lease_time())
        c.exec_driver_sql(
            SQLITE_RENEW if self.sqlite else PG_RENEW, (*values, lease_time(lease.seconds))
        )

    def _renewal_due(self, send_id: int, lease) -> bool:
        """Whether a batch's transaction should renew `lease`: when this ledger last renewed it
        a quarter of its time ago or more. Every batch would be as right, at a statement more;
        this way the lease never has less than three quarters of its time left at a claim."""
        last = self._renewed.get((send_id, lease.holder))
        return last is None or time.monotonic() - last >= lease.seconds / 4

    def _renewed_at(self, send_id: int, lease, started: float) -> None:
        """`lease` was renewed by a transaction begun at `started` that has now committed."""
        self._renewed[(send_id, lease.holder)] = started

    @_retried
    def take_lease(self, send_id: int, lease) -> bool:
        """Join the send's holders; False while `bulletin forget`/`purge` hold the database."""
        started, joined = time.monotonic(), self._conn is not None
        with self.transaction() as c:
            if not self.sqlite:  # they hold SEND_LOCK exclusively (server_send_lock)
                free = c.execute(select(func.pg_try_advisory_xact_lock_shared(SEND_LOCK)))
                if not free.scalar():
                    return False
            self._renew(c, send_id, lease)
        if not joined:  # committed now (an enclosing transaction commits later)
            self._renewed_at(send_id, lease, started)
        return True

    @_retried
    def resolve_stale(self, send_id: int, holder: str, *, everyone: bool = False) -> list[str]:
        """`sending` rows of dead holders become `unknown` (never re-sent without
        --resend-unknown); their lease rows go. A holder is dead when its lease expired, or,
        with `everyone` (the caller holds the send alone: SQLite's lock), whoever it was."""
        now = lease_time()
        with self.transaction() as c:
            where = [D.c.send_id == send_id, D.c.state == State.SENDING]
            if not everyone:
                live = select(L.c.holder).where(L.c.send_id == send_id, L.c.expires_at >= now)
                where.append(
                    or_(D.c.lease.is_(None), and_(D.c.lease != holder, D.c.lease.not_in(live)))
                )
            # Rows first, then an UPDATE of exactly those still `sending`: a claim committed
            # meanwhile by a holder this statement's snapshot did not see is left alone.
            stale = c.execute(select(D.c.id, D.c.email).where(*where)).all()
            now_text = utcnow()
            for chunk in _chunks([r.id for r in stale], IN_CHUNK * 2):
                c.execute(
                    update(D)
                    .where(D.c.id.in_(chunk), D.c.state == State.SENDING)
                    .values(state=State.UNKNOWN, updated_at=now_text, error=STALE_ERROR)
                )
            gone = L.c.holder != holder if everyone else L.c.expires_at < now
            c.execute(delete(L).where(L.c.send_id == send_id, gone))
        return [r.email for r in stale]

    @_retried
    def other_holders(self, send_id: int, holder: str) -> int:
        """Live holders of the send other than `holder`."""
        with self._read() as c:
            return c.execute(
                select(func.count())
                .select_from(L)
                .where(L.c.send_id == send_id, L.c.holder != holder, L.c.expires_at >= lease_time())
            ).scalar_one()

    @_retried
    def others_in_flight(self, send_id: int, holder: str) -> int:
        """`sending` rows claimed by someone other than `holder`."""
        with self._read() as c:
            return c.execute(
                select(func.count())
                .select_from(D)
                .where(
                    D.c.send_id == send_id,
                    D.c.state == State.SENDING,
                    or_(D.c.lease.is_(None), D.c.lease != holder),
                )
            ).scalar_one()

    @_retried
    def release_lease(self, send_id: int, holder: str) -> list[str]:
        """Leave the send: `holder`'s own `sending` rows (requests whose answer never came)
        become `unknown`, and its lease row goes. Returns those rows' addresses."""
        where = and_(D.c.send_id == send_id, D.c.state == State.SENDING, D.c.lease == holder)
        with self.transaction() as c:
            emails = list(c.execute(select(D.c.email).where(where)).scalars())
            if emails:
                c.execute(
                    update(D)
                    .where(where)
                    .values(state=State.UNKNOWN, updated_at=utcnow(), error=STALE_ERROR)
                )
            c.execute(delete(L).where(L.c.send_id == send_id, L.c.holder == holder))
        self._renewed.pop((send_id, holder), None)
        return emails

    def holders(self, send_id: int) -> list[Holder]:
        """Who holds a lease on the send (`status` shows them), first come first."""
        now = lease_time()
        with self._read() as c:
            return [
                Holder(r.holder, r.host, r.pid, r.expires_at, r.expires_at >= now)
                for r in c.execute(
                    select(L.c.holder, L.c.host, L.c.pid, L.c.expires_at)
                    .where(L.c.send_id == send_id)
                    .order_by(L.c.acquired_at)
                )
            ]

    def again(self, work):
        """Run `work(attempt)` (one whole transaction). On PostgreSQL, when the connection was
        lost, reconnect (pool_pre_ping) and run it again, up to RETRIES times: the lost one
        either committed or not, and `work` must be right either way."""
        for attempt in itertools.count():
            try:
                return work(attempt)
            except DatabaseError as error:
                lost = getattr(error, "lost", False)
                if self.sqlite or not lost or attempt >= RETRIES or self._conn is not None:
                    raise
                time.sleep(min(2.0, 0.1 * 2**attempt))  # 0.1 s … 2 s, about 10 s in all

    def claim(
        self,
        send_id: int,
        limit: int,
        after: int = 0,
        record: Iterable = (),
        lease=None,
        in_flight: Container[int] = (),
    ) -> list[Claimed]:
        """Atomically move up to `limit` pending recipients (ids above `after`) to `sending`.

        `record` writes the previous batch's outcomes in the same transaction, so a send
        costs one durable commit per batch rather than two. With a `lease`, the rows carry
        its holder and the lease is renewed in the same transaction. If the connection is lost
        the transaction runs again; the lost claim may have committed, so the holder's own
        `sending` rows not `in_flight` (its requests awaiting answers) are that claim's rows.
        """
        record = list(record)
        renew = lease is not None and self._renewal_due(send_id, lease)

        def work(attempt: int) -> list[Claimed]:
            with self.transaction() as c:
                self._record(c, record)  # only rows still `sending`: right if it ran before
                if renew:
                    self._renew(c, send_id, lease)
                if attempt and lease is not None:
                    mine = c.execute(
                        select(
                            D.c.id,
                            D.c.email,
                            D.c.email_key,
                            D.c.fields,
                            D.c.first_name,
                            D.c.last_name,
                            D.c.ward,
                        )
                        .where(
                            D.c.send_id == send_id,
                            D.c.state == State.SENDING,
                            D.c.lease == lease.holder,
                        )
                        .order_by(D.c.id)
                    ).all()
                    orphans = [r for r in mine if r.id not in in_flight]
                    if orphans:
                        return [Claimed(*r) for r in orphans]
                return self._claim(c, send_id, limit, after, lease)

        started = time.monotonic()
        claimed = self.again(work)
        if renew:
            self._renewed_at(send_id, lease, started)
        return claimed

    def _claim(self, c: Connection, send_id: int, limit: int, after: int, lease) -> list[Claimed]:
        """The first `limit` pending rows above `after` become `sending`: on SQLite one read of
        them as a single JSON value and one UPDATE (BEGIN IMMEDIATE already serialises
        claimers); on PostgreSQL one UPDATE … RETURNING whose rows are locked SKIP LOCKED, so
        concurrent claimers take different rows."""
        holder = lease.holder if lease is not None else None
        now = utcnow()
        if not self.sqlite:
            rows = c.exec_driver_sql(
                PG_CLAIM,
                (State.SENDING.value, now, holder, send_id, State.PENDING.value, after, limit),
            ).all()
            return sorted(map(_claimed, rows))
        found = c.exec_driver_sql(
            SQLITE_PICK, (send_id, State.PENDING.value, after, limit)
        ).scalar_one()
        rows = sorted(json.loads(found))
        if rows:
            taken = c.exec_driver_sql(
                SQLITE_TAKE,
                (
                    State.SENDING.value,
                    now,
                    holder,
                    send_id,
                    State.PENDING.value,
                    after,
                    rows[-1][0],
                ),
            ).rowcount
            assert taken == len(rows), (taken, len(rows))
        return list(map(_claimed, rows))

    def record(self, outcomes: Iterable, *, send_id: int | None = None, lease=None) -> None:
        """Write the transport's outcomes (Outcome, or (id, state, message id, error)); with a
        `lease` (and its `send_id`), renew it in the same transaction when due. Run again on a
        new connection if the connection is lost (only rows still `sending` are written)."""
        outcomes = list(outcomes)
        renew = lease is not None and send_id is not None and self._renewal_due(send_id, lease)

        def work(_attempt: int) -> None:
            with self.transaction() as c:
                self._record(c, outcomes)
                if renew:
                    self._renew(c, send_id, lease)

        if not outcomes and not renew:
            return
        started = time.monotonic()
        self.again(work)
        if renew:
            self._renewed_at(send_id, lease, started)

    def _record(self, c: Connection, outcomes: Iterable) -> None:
        """One UPDATE per (state, message id, error), its ids one parameter (a JSON array on
        SQLite, an array on PostgreSQL): a SendGrid batch is usually one statement."""
        rows = list(outcomes)
        if not rows:
            return
        if set(map(type, rows)) != {tuple}:  # Outcome objects (the check is no Python loop)
            rows = list(map(_outcome, rows))
        grouped: dict[tuple, list[int]] = defaultdict(list)
        if len(set(map(itemgetter(1, 2, 3), rows))) == 1:  # the usual batch, without a loop
            _, state, message_id, error = rows[0]
            grouped[(str(state), message_id, error)] = list(map(itemgetter(0), rows))
        else:
            for delivery_id, state, message_id, error in rows:
                grouped[(str(state), message_id, error)].append(delivery_id)
        now, sending = utcnow(), State.SENDING.value
        for (state, message_id, error), ids in grouped.items():
            if self.sqlite:
                values = (state, message_id, error, now, json.dumps(ids), sending)
                c.exec_driver_sql(SQLITE_RECORD, values)
            else:
                c.exec_driver_sql(PG_RECORD, (state, message_id, error, now, ids, sending))

    # --- reading a send ------------------------------------------------------------------

    @_retried
    def counts(self, send_id: int) -> Counts:
        by_state = {state.value: 0 for state in State}
        with self._read() as c:
            purged = c.execute(select(P.c.counts).where(P.c.send_id == send_id)).scalar()
            if purged is not None:  # its rows are gone; `bulletin purge` kept the totals
                kept = json.loads(purged)
                opened, clicked = kept.pop("opened", 0), kept.pop("clicked", 0)
                return Counts({**by_state, **kept}, opened, clicked)
            for state, number in c.execute(
                select(D.c.state, func.count()).where(D.c.send_id == send_id).group_by(D.c.state)
            ):
                by_state[state] = number
            opened, clicked = c.execute(
                select(
                    func.coalesce(func.sum(D.c.opened), 0), func.coalesce(func.sum(D.c.clicked), 0)
                ).where(D.c.send_id == send_id)
            ).one()
        return Counts(by_state, int(opened), int(clicked))

    def emails_in_state(self, send_id: int, state: State) -> list[str]:
        with self._read() as c:
            return list(
                c.execute(
                    select(D.c.email)
                    .where(D.c.send_id == send_id, D.c.state == state)
                    .order_by(D.c.id)
                ).scalars()
            )

    def delivery_rows(self, send_id: int) -> Iterator[DeliveryRow]:
        """Every recipient row of a send, in order, streamed."""
        with self._read() as c:
            result = c.execution_options(yield_per=2000).execute(
                select(D).where(D.c.send_id == send_id).order_by(D.c.id)
            )
            for row in result:
                yield DeliveryRow(**row._mapping)

    def ward_counts(self, send_id: int) -> list[WardCount]:
        def among(states) -> object:
            return func.coalesce(func.sum(case((D.c.state.in_(sorted(states)), 1), else_=0)), 0)

        with self._read() as c:
            rows = c.execute(
                select(
                    D.c.ward,
                    func.count().label("recipients"),
                    among(SENT).label("sent"),
                    among(DELIVERED).label("delivered"),
                    among(NOT_ARRIVED).label("bounced"),
                    among(UNSUBSCRIBED).label("unsubscribed"),
                    func.coalesce(func.sum(D.c.opened), 0).label("opened"),
                    func.coalesce(func.sum(D.c.clicked), 0).label("clicked"),
                )
                .where(D.c.send_id == send_id)
                .group_by(D.c.ward)
                .order_by(D.c.ward)
            ).all()
        return [WardCount(**r._mapping) for r in rows]

    def failure_rows(self, send_id: int) -> list[Failure]:
        with self._read() as c:
            rows = c.execute(
                select(D.c.state, D.c.error, D.c.cause).where(
                    D.c.send_id == send_id, D.c.state.in_(sorted(FAILURES))
                )
            ).all()
        return [Failure(r.state, r.error, r.cause) for r in rows]

    def first_event_times(self, send_id: int) -> list[FirstEvent]:
        """Per delivery of a send and event type, the earliest event timestamp."""
        with self._read() as c:
            rows = c.execute(
                select(E.c.delivery_id, E.c.event, func.min(E.c.timestamp).label("timestamp"))
                .join(D, D.c.id == E.c.delivery_id)
                .where(D.c.send_id == send_id, E.c.timestamp.is_not(None))
                .group_by(E.c.delivery_id, E.c.event)
            ).all()
        return [FirstEvent(**r._mapping) for r in rows]

    # --- suppressions --------------------------------------------------------------------

    def suppressed_hashes(self) -> set[str]:
        with self._read() as c:
            return set(c.execute(select(X.c.email_hash)).scalars())

    def suppress(self, email: str, reason: str, source: str = "manual") -> bool:
        """Add an address to the do-not-send list; False if it was already there."""
        return self.suppress_many([(email, reason, source)]) == 1

    def unsuppress(self, email: str) -> bool:
        with self.transaction() as c:
            gone = c.execute(delete(X).where(X.c.email_hash.in_(self.hashes(email)))).rowcount
            return gone >= 1

    def suppressions(self) -> list[Suppression]:
        with self._read() as c:
            rows = c.execute(select(X).order_by(X.c.created_at, X.c.email)).all()
        return [Suppression(**r._mapping) for r in rows]

    def suppress_many(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """(email, reason, source) onto the do-not-send list; returns how many were new."""
        now = utcnow()
        params = [
            {
                "email_hash": email_hash(e),
                "email": e.strip(),
                "reason": reason,
                "source": source,
                "created_at": now,
            }
            for e, reason, source in rows
        ]
        if not params:
            return 0
        with self.transaction() as c:
            added = 0
            statement = self._insert_ignore(X).returning(X.c.email_hash)
            if self.secret:  # someone forgotten is on the list already, under a keyed hash
                keyed = [keyed_hash(row["email"], self.secret) for row in params]
                held = set()
                for chunk in _chunks(set(keyed), IN_CHUNK):
                    held |= set(
                        c.execute(select(X.c.email_hash).where(X.c.email_hash.in_(chunk))).scalars()
                    )
                params = [row for k, row in zip(keyed, params, strict=True) if k not in held]
            for row in params:  # an INSERT's rowcount is not kept on PostgreSQL: count RETURNING
                added += len(c.execute(statement, row).all())
            return added

    def is_suppressed(self, email: str) -> bool:
        with self._read() as c:
            found = c.execute(select(X.c.email_hash).where(X.c.email_hash.in_(self.hashes(email))))
            return found.first() is not None

    def forgotten_hashes(self) -> set[str]:
        """Hashes of people erased by `bulletin forget`."""
        with self._read() as c:
            return set(
                c.execute(select(X.c.email_hash).where(X.c.source == FORGET_SOURCE)).scalars()
            )

    # --- delivery events (issue 5) -------------------------------------------------------
    # Called inside the caller's `transaction()`: bulletin/events.py reads the current state
    # and writes the outcome of a whole batch in one short transaction.

    def get_delivery(self, delivery_id: int) -> DeliveryRow | None:
        with self._read() as c:
            row = c.execute(select(D).where(D.c.id == delivery_id)).first()
        return DeliveryRow(**row._mapping) if row else None

    def _deliveries_where(self, column, values: Iterable) -> list[DeliveryRow]:
        values = list(dict.fromkeys(v for v in values if v is not None))
        found: list[DeliveryRow] = []
        with self._read() as c:
            for chunk in _chunks(values, IN_CHUNK):
                found += [
                    DeliveryRow(**r._mapping) for r in c.execute(select(D).where(column.in_(chunk)))
                ]
        return found

    def deliveries_by_id(self, ids: Iterable[int]) -> list[DeliveryRow]:
        return self._deliveries_where(D.c.id, ids)

    def deliveries_by_message_id(self, message_ids: Iterable[str]) -> list[DeliveryRow]:
        return self._deliveries_where(D.c.message_id, message_ids)

    def deliveries_by_email(self, email_keys: Iterable[str]) -> list[DeliveryRow]:
        return self._deliveries_where(D.c.email_key, email_keys)

    # The event path (issue 14): a batch of 1,000 (a post) or 5,000 (an import) costs a handful
    # of statements. PostgreSQL gets each list as one array parameter (`= ANY`, `unnest`): one
    # round trip however long the batch; SQLite gets plain tuples straight to the driver's
    # executemany, without SQLAlchemy's per-row parameter handling (bench/webhook_apply.py).

    def event_targets(self, by: str, values: Iterable) -> list[EventTarget]:
        """The deliveries an event batch may name, `by` "id", "email_key" or "message_id"."""
        values = list(dict.fromkeys(v for v in values if v is not None))
        if not values:
            return []
        column = D.c[by]
        wanted = (D.c.id, D.c.send_id, D.c.email, D.c.email_key, D.c.state, D.c.message_id)
        found: list[EventTarget] = []
        with self._read() as c:
            if self.sqlite:
                for chunk in _chunks(values, IN_CHUNK):
                    found += map(
                        EventTarget._make, c.execute(select(*wanted).where(column.in_(chunk)))
                    )
            else:
                query = select(*wanted).where(column == any_(_array(by)))
                found = list(map(EventTarget._make, c.execute(query, {by: values})))
        return found

    def known_event_ids(self, event_ids: Iterable[str]) -> set[str]:
        values = list(dict.fromkeys(event_ids))
        seen: set[str] = set()
        with self._read() as c:
            if not self.sqlite and values:
                query = select(E.c.sg_event_id).where(E.c.sg_event_id == any_(_array("ids")))
                return set(c.execute(query, {"ids": values}).scalars())
            for chunk in _chunks(values, IN_CHUNK):
                seen |= set(
                    c.execute(select(E.c.sg_event_id).where(E.c.sg_event_id.in_(chunk))).scalars()
                )
        return seen

    def prepare_events(self) -> None:
        """Compile the event path's statements and run its lookups once, reading only, so a
        server's first post costs what the others do."""
        self.known_event_ids(["-"])
        for by, value in (("id", 0), ("email_key", "-"), ("message_id", "-")):
            self.event_targets(by, [value])
        self.forgotten_hashes()
        if self.sqlite:
            for key, build, names in SQLITE_EVENT_STATEMENTS.values():
                _prepared(self.engine.dialect, key, build, names)

    def insert_new_events(self, rows: list[tuple]) -> set[str]:
        """`insert_events` of rows with distinct ids; returns the ids that were not stored yet.

        PostgreSQL says which rows went in (RETURNING), so two processes applying one post
        never both count an event; SQLite's write transaction already keeps others out while
        it looks the ids up first.
        """
        if not rows:
            return set()
        with self.transaction() as c:
            if not self.sqlite:
                return set(
                    c.exec_driver_sql(PG_INSERT_EVENTS + RETURNING_ID, _columns(rows, 8)).scalars()
                )
            known = self.known_event_ids(row[0] for row in rows)
            new = [row for row in rows if row[0] not in known]
            if new:
                _executemany(c, *SQLITE_EVENT_STATEMENTS["insert_events"], new)
            return {row[0] for row in new}

    def insert_events(self, rows: Iterable[tuple]) -> None:
        """(sg_event_id, delivery_id, event, email, timestamp, reason, payload, received_at)."""
        rows = list(rows)
        if rows:
            with self.transaction() as c:
                if self.sqlite:
                    _executemany(c, *SQLITE_EVENT_STATEMENTS["insert_events"], rows)
                else:
                    c.exec_driver_sql(PG_INSERT_EVENTS, _columns(rows, 8))

    def set_states(self, rows: Iterable[tuple[str, str | None, str, int]]) -> None:
        """(state, error, updated_at, delivery id); the caller has decided precedence."""
        rows = [(str(s), e, at, i) for s, e, at, i in rows]
        if not rows:
            return
        with self.transaction() as c:
            if self.sqlite:
                _executemany(c, *SQLITE_EVENT_STATEMENTS["set_states"], rows)
            else:
                c.exec_driver_sql(PG_SET_STATES, _columns(rows, 4))

    def mark_engagement(self, kind: str, rows: Iterable[tuple[str, str, int]]) -> None:
        """Set the opened/clicked flag and widen first/last times: (first, last, delivery id)."""
        column = {"open": "opened", "click": "clicked"}[kind]
        rows = list(rows)
        if not rows:
            return
        with self.transaction() as c:
            if not self.sqlite:
                c.exec_driver_sql(PG_MARK_ENGAGEMENT.format(column=column), _columns(rows, 3))
                return
            _executemany(c, *SQLITE_EVENT_STATEMENTS[f"mark_{column}"], rows)

    def record_events(
        self,
        states: list[tuple[str, str | None, str, int]],
        opens: list[tuple[str, str, int]],
        clicks: list[tuple[str, str, int]],
    ) -> None:
        """`set_states`, then `mark_engagement` of opens and of clicks, for one event batch.

        On PostgreSQL it is one UPDATE, so a delivery gets one new row version per batch rather
        than up to three (every version rewrites its index entries).
        """
        if self.sqlite:
            self.set_states(states)
            self.mark_engagement("open", opens)
            self.mark_engagement("click", clicks)
            return
        merged: dict[int, list] = {}
        for state, error, at, i in states:
            merged.setdefault(i, [None] * 7)[0:3] = [str(state), error, at]
        for offset, spans in ((3, opens), (5, clicks)):
            for lo, hi, i in spans:
                merged.setdefault(i, [None] * 7)[offset : offset + 2] = [lo, hi]
        if merged:
            with self.transaction() as c:
                rows = [(i, *values) for i, values in merged.items()]
                c.exec_driver_sql(PG_RECORD_EVENTS, _columns(rows, 8))

    @contextmanager
    def bulk_import(self) -> Iterator[None]:
        """An import can always be run again (duplicates are ignored), so on SQLite it need not
        wait for the disk on every commit; a bigger page cache and fewer checkpoints halve its
        time (bench/events_bench.py). Applies to this ledger's connections while it lasts."""
        from sqlalchemy import event

        if not self.sqlite:  # the same trade on PostgreSQL: commits do not wait for the disk

            def relax(connection) -> None:
                connection.exec_driver_sql("SET LOCAL synchronous_commit = off")

            event.listen(self.engine, "begin", relax)
            try:
                yield
            finally:
                event.remove(self.engine, "begin", relax)
            return

        pragmas = {"synchronous": 1, "cache_size": -65536, "wal_autocheckpoint": 16384}

        def tune(dbapi_connection, _record, _proxy) -> None:
            for name, value in pragmas.items():
                dbapi_connection.execute(f"PRAGMA {name}={value}")

        event.listen(self.engine, "checkout", tune)
        try:
            yield
        finally:
            event.remove(self.engine, "checkout", tune)
            self.engine.dispose()  # new connections get the usual settings again

    # --- data protection (issue 8) -------------------------------------------------------

    def secure_delete(self) -> None:
        """On SQLite, overwrite deleted content with zeros instead of leaving it in free pages."""
        if self.sqlite:
            from sqlalchemy import event

            @event.listens_for(self.engine, "connect")
            def _secure(dbapi_connection, _record) -> None:
                dbapi_connection.execute("PRAGMA secure_delete = ON")

            self.engine.dispose()

    def clear_wal(self) -> bool:
        """Copy SQLite's WAL into the database and empty it; False if a reader kept old pages."""
        if not self.sqlite:
            return True
        try:
            with self.engine.connect() as c:
                busy = c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()[0]
        except DBAPIError:
            return False
        return busy == 0

    def forget(self, email: str) -> ForgetCounts:
        """Blank one person's contact-derived data everywhere; keep a hashed suppression."""
        import re

        key, plain = email_key(email), email_hash(email)
        # With a secret, keep only the keyed hash: a plain SHA-256 of an address can be tested
        # by anyone who guesses it. An existing plain row of the address becomes the keyed row.
        digest = keyed_hash(email, self.secret) if self.secret else plain
        result = ForgetCounts(keyed=digest != plain)
        with self.transaction() as c:
            if digest != plain:
                held = set(
                    c.execute(
                        select(X.c.email_hash).where(X.c.email_hash.in_((plain, digest)))
                    ).scalars()
                )
                if digest in held:
                    c.execute(delete(X).where(X.c.email_hash == plain))
                elif plain in held:
                    c.execute(update(X).where(X.c.email_hash == plain).values(email_hash=digest))
            rows = c.execute(select(D.c.id, D.c.send_id).where(D.c.email_key == key)).all()
            ids = [r.id for r in rows]
            result.deliveries, result.sends = len(ids), len({r.send_id for r in rows})
            result.delivery_ids = tuple(ids)
            blank = {"email": None, "reason": None, "payload": "{}"}
            mine = func.lower(E.c.email) == key
            result.events = c.execute(
                update(E).where(or_(mine, E.c.delivery_id.in_(ids)) if ids else mine).values(blank)
            ).rowcount
            for chunk in _chunks(ids, IN_CHUNK):
                c.execute(
                    update(D)
                    .where(D.c.id.in_(chunk))
                    .values(**PERSONAL, email_key=literal("forgotten:") + cast(D.c.id, Text))
                )
            result.newly_suppressed = (
                c.execute(
                    self._insert_ignore(X)
                    .values(
                        email_hash=digest,
                        email=None,
                        reason=FORGET_REASON,
                        source=FORGET_SOURCE,
                        created_at=utcnow(),
                    )
                    .returning(X.c.email_hash)
                ).all()
                != []
            )
            c.execute(update(X).where(X.c.email_hash == digest).values(email=None))
            # Suppression reasons may quote the address (a bounce's SMTP text, issue 12).
            named = re.compile(re.escape(key), re.IGNORECASE)
            for row in c.execute(
                select(X.c.email_hash, X.c.reason).where(
                    or_(
                        X.c.email_hash == digest,
                        func.lower(X.c.reason).contains(key, autoescape=True),
                    )
                )
            ).all():
                reason = named.sub("(address removed)", row.reason)
                if row.email_hash == digest and ":" in reason:  # "hard bounce: 550 … <address>"
                    reason = reason.split(":", 1)[0]
                c.execute(update(X).where(X.c.email_hash == row.email_hash).values(reason=reason))
        return result

    def purge(self, cutoff: datetime, *, dry_run: bool = False) -> PurgeCounts:
        """Delete per-recipient rows of sends made before `cutoff`, keeping their totals."""
        stamp = cutoff.astimezone(UTC).isoformat(timespec="seconds")
        with self.transaction(write=not dry_run) as c:
            purged = set(c.execute(select(P.c.send_id)).scalars())
            old = [
                s
                for s in self.sends()
                if s.id not in purged and datetime.fromisoformat(s.created_at) < cutoff
            ]
            result = PurgeCounts([s.id for s in old])
            within = select(D.c.id).where(D.c.send_id.in_(result.sends))
            orphans = and_(E.c.delivery_id.is_(None), E.c.received_at < stamp)
            if dry_run:
                if old:
                    result.deliveries = c.execute(
                        select(func.count()).select_from(D).where(D.c.send_id.in_(result.sends))
                    ).scalar_one()
                    result.events = c.execute(
                        select(func.count()).select_from(E).where(E.c.delivery_id.in_(within))
                    ).scalar_one()
                result.events += c.execute(
                    select(func.count()).select_from(E).where(orphans)
                ).scalar_one()
                return result
            for send in old:
                totals = dict(self.counts(send.id))
                c.execute(
                    insert(P).values(
                        send_id=send.id,
                        purged_at=utcnow(),
                        counts=json.dumps(totals, sort_keys=True),
                    )
                )
            if old:
                result.events = c.execute(delete(E).where(E.c.delivery_id.in_(within))).rowcount
                result.deliveries = c.execute(
                    delete(D).where(D.c.send_id.in_(result.sends))
                ).rowcount
            result.events += c.execute(delete(E).where(orphans)).rowcount
        return result

    # --- `bulletin run`'s notices ---------------------------------------------------------

    def notices(self) -> dict[str, str]:
        """Notice key → when it was first given."""
        with self._read() as c:
            return dict(c.execute(select(N.c.key, N.c.first_given_at)).all())

    def remember_notices(self, current: dict[str, str]) -> None:
        """Keep exactly these notices (key → first given); the rest no longer apply."""
        with self.transaction() as c:
            known = dict(c.execute(select(N.c.key, N.c.first_given_at)).all())
            gone = [k for k in known if k not in current]
            for chunk in _chunks(gone, IN_CHUNK):
                c.execute(delete(N).where(N.c.key.in_(chunk)))
            new = [{"key": k, "first_given_at": v} for k, v in current.items() if k not in known]
            if new:
                c.execute(insert(N), new)


SEND_LOCK = 0x62756C73  # "buls": PostgreSQL's lock on the whole database (forget, purge)
MESSAGE_LOCK = 0x6275736D  # "busm" with hashtext(message): creating or resuming a message's send


@contextmanager
def server_send_lock(db: str) -> Iterator[bool]:
    """Hold the whole PostgreSQL database (`forget`, `purge`) while the block runs; yields False
    if another session holds it or a sender holds a live lease. Senders take the same lock
    shared while they join a send (`Ledger.take_lease`). The server releases it when the
    holder's connection ends (a dead process loses it), so it needs no expiry."""
    engine = make_engine(db)
    try:
        with engine.connect() as c:
            got = bool(c.execute(select(func.pg_try_advisory_lock(SEND_LOCK))).scalar())
            if (
                got
                and c.execute(
                    select(func.count()).select_from(L).where(L.c.expires_at >= lease_time())
                ).scalar_one()
            ):
                c.execute(select(func.pg_advisory_unlock(SEND_LOCK)))
                got = False
            c.commit()
            try:
                yield got
            finally:
                if got:
                    with suppress(DBAPIError):
                        c.execute(select(func.pg_advisory_unlock(SEND_LOCK)))
                        c.commit()
    except DBAPIError as error:
        raise explain(error, engine) from None
    finally:
        engine.dispose()


def open_ledger(
    db: str | Path, *, timeout: float | None = None, secret: str | None = None
) -> Ledger:
    """Open the ledger at `db` (a SQLite path or a postgresql:// URL), at the newest schema.

    A SQLite file is created or upgraded on first use, as bulletin always did; a PostgreSQL
    database is upgraded by `bulletin db upgrade` and refused until then.
    """
    engine = make_engine(db, timeout=timeout)
    try:
        _ensure_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return Ledger(engine, secret=secret)


def _ensure_current(engine: Engine) -> None:
    from bulletin.ledger import migrate

    if engine.dialect.name == "sqlite":
        try:
            with engine.connect() as c:
                version = c.exec_driver_sql("PRAGMA user_version").scalar()
                at = None
                if version == SCHEMA_VERSION:
                    at = c.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                c.rollback()
        except DBAPIError as error:
            raise explain(error, engine) from None
        if at == migrate.HEAD or (version == 0 and migrate.create_fresh(engine)):
            return
        migrate.upgrade(engine)
        return
    current = migrate.current_revision(engine)
    if current != migrate.HEAD:
        raise DatabaseError(
            f"tracking database {describe(engine)} is at schema {current or 'none'}, this "
            f"bulletin needs {migrate.HEAD}; run `bulletin db upgrade` (once, from one machine)"
        )
