"""Sign-off before send (issue 17): the commander approves the exact bulletin.

An approval is of one *version*: a fingerprint over what recipients receive — the message
file's bytes, the layouts it is rendered with (the working folder's or the packaged ones,
whichever is used), the audience definition (front matter `audience` and `contacts`, not the
contact files) and the settings that reach every copy (sender, organisation, unit, privacy
link). Editing any of them makes a new version that needs approving again; a contact list
growing does not (the send summary shows the audience then and now).

An approver is asked by email (`bulletin approve NAME --request ADDRESS`): the email carries
the bulletin as recipients see it, its audience, what changed since the last approved version,
and a signed link to /approve on `bulletin events serve`. The link is bound to the request (so
to that approver and that version) and expires; its decision is recorded once. Or the approver
signs at the sender's desk (`--as "Name <address>"`). With BULLETIN_APPROVALS=N, `send` and
`run` refuse a version without N approvals from different BULLETIN_APPROVERS.

What a link approval proves: whoever used it could read that mailbox at that time; not who
they are.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bulletin.errors import ConfigError, InputError
from bulletin.ledger.approvals import ApprovalEvent, ApprovalStore, Kind, Route

if TYPE_CHECKING:  # `status` reads approval records without loading check's stack
    from bulletin.check import Checked
    from bulletin.config import Settings
    from bulletin.contacts import Contact
    from bulletin.message import Address, Message

LINK_LIFETIME = timedelta(days=7)
LAYOUTS = ("email.html", "email.txt")  # what an email send renders with
PURPOSE = "approval"  # in every signature: an unsubscribe token never verifies here
_TOKEN = re.compile(r"^(\d{1,12})\.(\d{1,12})\.([A-Za-z0-9_-]{22})$")
_BODY = re.compile(r"<body\b[^>]*>(.*)</body>", re.IGNORECASE | re.DOTALL)


# --- the fingerprint -------------------------------------------------------------------------


def fingerprint(
    message_bytes: bytes,
    layouts: Mapping[str, bytes],
    audience: Mapping[str, Sequence[str]],
    contacts: Sequence[str],
    identity: Mapping[str, str] | None = None,
) -> str:
    """SHA-256 over what recipients receive; pure. Contact files' contents are not in it."""
    digest = hashlib.sha256()

    def part(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + len(data).to_bytes(8, "big") + data)

    part("message", message_bytes)
    for name in sorted(layouts):
        part(f"layout:{name}", layouts[name])
    part("audience", audience_definition(audience, contacts).encode())
    part("identity", json.dumps(dict(identity or {}), sort_keys=True).encode())
    return digest.hexdigest()


def audience_definition(audience: Mapping[str, Sequence[str]], contacts: Sequence[str]) -> str:
    """The audience as the front matter defines it, as canonical JSON."""
    return json.dumps(
        {"audience": {k: list(v) for k, v in audience.items()}, "contacts": list(contacts)},
        sort_keys=True,
        ensure_ascii=False,
    )


def used_layouts(settings: Settings) -> dict[str, bytes]:
    """email.html, email.txt and every layout they include or extend, as rendering finds them."""
    from jinja2 import TemplateNotFound, meta

    from bulletin.render import template_environment

    environment = template_environment(settings.workdir)
    found: dict[str, bytes] = {}
    waiting = list(LAYOUTS)
    while waiting:
        name = waiting.pop()
        if name in found:
            continue
        try:
            source, _, _ = environment.loader.get_source(environment, name)
        except TemplateNotFound:
            found[name] = b""
            continue
        found[name] = source.encode("utf-8")
        # A broken layout: `check` reports it; its bytes are hashed all the same.
        with suppress(Exception):
            waiting += [n for n in meta.find_referenced_templates(environment.parse(source)) if n]
    return found


def identity(message: Message, settings: Settings) -> dict[str, str]:
    return {
        "from": str(message.sender or ""),
        "reply_to": str(message.reply_to or ""),
        "organisation": settings.organisation,
        "unit": settings.unit,
        "privacy_url": settings.privacy_url,
    }


@dataclass(frozen=True)
class Version:
    """One version of a message as it would be sent now."""

    message: str  # the name (messages/NAME.md)
    shown: str  # the path as the user sees it
    fingerprint: str
    text: str
    definition: str  # audience_definition(...)
    audience: int  # emailable recipients now

    @property
    def short(self) -> str:
        return self.fingerprint[:12]


def current_version(checked: Checked, settings: Settings) -> Version:
    message = checked.message
    if message is None:
        raise InputError("the message cannot be read; run bulletin check")
    raw = message.path.read_bytes()
    return Version(
        message=message.name,
        shown=message.shown,
        fingerprint=fingerprint(
            raw,
            used_layouts(settings),
            message.audience,
            message.contacts,
            identity(message, settings),
        ),
        text=raw.decode("utf-8-sig", "replace").replace("\r\n", "\n"),
        definition=audience_definition(message.audience, message.contacts),
        audience=checked.recipient_count,
    )


# --- signed links ----------------------------------------------------------------------------


def _signature(secret: str, request_id: int, approver: str, print_: str, expires: int) -> str:
    text = f"{PURPOSE}:{request_id}:{approver.strip().lower()}:{print_}:{expires}".encode()
    digest = hmac.new(secret.encode(), text, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def make_token(secret: str, request_id: int, approver: str, print_: str, expires: int) -> str:
    """`REQUEST.EXPIRES.SIGNATURE`: bound to the request, its approver, its version, a time."""
    return f"{request_id}.{expires}.{_signature(secret, request_id, approver, print_, expires)}"


def parse_token(token: str) -> tuple[int, int, str] | None:
    match = _TOKEN.match(token or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3)


def verify_token(secret: str, token: str, approver: str, print_: str) -> bool:
    """True if the token was signed with `secret` for this approver and version."""
    parsed = parse_token(token)
    if parsed is None or not secret:
        return False
    request_id, expires, signature = parsed
    expected = _signature(secret, request_id, approver, print_, expires)
    return hmac.compare_digest(expected, signature)


def approve_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/approve?t={token}"


# --- standing: is this version approved? ------------------------------------------------------


@dataclass
class Standing:
    version: Version
    needed: int
    approvals: list[ApprovalEvent] = field(default_factory=list)  # counted, one per approver
    blocking: ApprovalEvent | None = None  # "ask for changes" after the latest approval
    earlier: ApprovalEvent | None = None  # an approval of another version

    @property
    def ok(self) -> bool:
        return self.blocking is None and len(self.approvals) >= self.needed

    def missing(self, command_name: str) -> str:
        """One line: what this version lacks before it may be sent."""
        version = f"{self.version.shown} (version {self.version.short})"
        ask = f"bulletin approve {command_name} --request ADDRESS"
        if self.blocking is not None:
            b = self.blocking
            comment = f': "{b.comment}"' if b.comment else ""
            return (
                f"{version} is not approved: {b.who} asked for changes on "
                f"{_when(b.created_at)}{comment}; edit it, then {ask}"
            )
        have = ", ".join(a.who for a in self.approvals) or "none"
        changed = " (an earlier version was approved; it has changed since)" if self.earlier else ""
        return (
            f"{version} needs {self.needed} approval(s) from BULLETIN_APPROVERS and has "
            f"{len(self.approvals)} ({have}){changed}; ask with: {ask}"
        )


def standing(store: ApprovalStore, version: Version, settings: Settings) -> Standing:
    allowed = set(settings.approvers)
    decisions = store.decisions(version.message, version.fingerprint)
    decisions = [d for d in decisions if d.approver in allowed]
    approvals: dict[str, ApprovalEvent] = {}
    latest = 0
    for decision in decisions:
        if decision.kind == Kind.APPROVED:
            approvals.setdefault(decision.approver, decision)
            latest = decision.id
    blocking = [d for d in decisions if d.kind == Kind.CHANGES and d.id > latest]
    return Standing(
        version,
        settings.approvals,
        list(approvals.values()),
        blocking[-1] if blocking else None,
        store.last_approved_other(version.message, version.fingerprint),
    )


def check_settings(settings: Settings) -> None:
    if settings.approvals > len(settings.approvers):
        raise ConfigError(
            f"BULLETIN_APPROVALS={settings.approvals} but BULLETIN_APPROVERS lists "
            f"{len(settings.approvers)} address(es): nobody could send; list the approvers' "
            "addresses, separated by commas"
        )


def for_send(checked: Checked, settings: Settings, command_name: str) -> Standing | None:
    """The version's standing for a send; InputError with one line if it may not go out.

    None when nothing was ever approved and sign-off is off: there is nothing to record.
    """
    from bulletin.tracking import Tracker

    if settings.approvals:
        check_settings(settings)
    if not settings.approvals and not settings.db_exists:
        return None
    version = current_version(checked, settings)
    if settings.db_exists:
        with Tracker(settings.db_url, timeout=settings.db_timeout) as tracker:
            result = standing(ApprovalStore(tracker), version, settings)
    else:  # nothing recorded yet; and a dry run must not create the database
        result = Standing(version, settings.approvals)
    if settings.approvals and not result.ok:
        raise Unapproved(result.missing(command_name), result)
    return result


class Unapproved(InputError):
    """The version lacks its approvals: one line says what is missing."""

    def __init__(self, line: str, standing: Standing) -> None:
        super().__init__(line)
        self.standing = standing


def record_send(tracker, send_id: int, result: Standing | None) -> None:
    """Keep, against the send, the version it went out as and the approvals it had."""
    if result is None:
        return
    ApprovalStore(tracker).record_send(
        send_id,
        result.version.fingerprint,
        result.version.audience,
        [a.id for a in result.approvals],
    )


def summary_line(result: Standing | None, audience_now: int) -> str | None:
    """`Approved:  …` for the send summary: who, and the audience then and now."""
    if result is None or not result.approvals:
        return None
    who = "; ".join(f"{a.who} ({a.route}, {_when(a.created_at)})" for a in result.approvals)
    then = result.approvals[-1].audience
    return (
        f"Approved:  {who}; version {result.version.short}; audience at approval {then}, "
        f"now {audience_now}"
    )


# --- what the approver sees ------------------------------------------------------------------


def describe_audience(message: Message, checked: Checked) -> list[str]:
    """Which filters, which lists, how many contacts."""
    filters = (
        "; ".join(
            f"{column} is {' or '.join(values)}" for column, values in message.audience.items()
        )
        or "everyone in the lists"
    )
    postal = len(checked.postal)
    return [
        f"Who: {filters}",
        f"Lists: {', '.join(message.contacts)}",
        f"How many: {len(checked.recipients)} email recipient(s)"
        + (f", {postal} postal-only (letters are printed separately)" if postal else ""),
    ]


def diff_since(earlier: ApprovalEvent | None, version: Version) -> str:
    """A unified diff of the message file since the last approved version ('' if none)."""
    if earlier is None:
        return ""
    lines = difflib.unified_diff(
        earlier.text.splitlines(keepends=True),
        version.text.splitlines(keepends=True),
        fromfile=f"approved {_when(earlier.created_at)} by {earlier.who} "
        f"(version {earlier.fingerprint[:12]})",
        tofile=f"now (version {version.short})",
    )
    text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return text or (
        "The message file is unchanged; its layouts (templates), sender or audience lists "
        "changed since it was approved.\n"
    )


@dataclass(frozen=True)
class Shown:
    """The bulletin as recipients see it, and what the approver is asked about."""

    subject: str
    sender: str
    preheader: str
    body_html: str  # the rendered email's <body>, styles inlined
    text: str
    personal_to: str  # whose copy it is ("" for a copy with placeholder fallbacks)
    audience: list[str]
    diff: str
    earlier: ApprovalEvent | None


def show(checked: Checked, settings: Settings, result: Standing) -> Shown:
    from bulletin.preview import preview_unsubscribe_url

    if checked.compiled is None:
        raise InputError(f"{checked.message.shown} does not render; run bulletin check")
    contact: Contact | None = checked.recipients[0] if checked.recipients else None
    rendered = checked.compiled.render(contact, preview_unsubscribe_url(settings))
    body = _BODY.search(rendered.html)
    message = checked.message
    return Shown(
        subject=rendered.subject,
        sender=str(message.sender or ""),
        preheader=message.preheader,
        body_html=body.group(1) if body else rendered.html,
        text=rendered.text,
        personal_to=contact.name or contact.email if contact else "",
        audience=describe_audience(message, checked),
        diff=diff_since(result.earlier, result.version),
        earlier=result.earlier,
    )


# --- asking, and approving at the desk -------------------------------------------------------


def approver_address(text: str, settings: Settings, option: str) -> Address:
    """The approver named on the command line: an address in BULLETIN_APPROVERS."""
    from bulletin.message import parse_address

    address, error = parse_address(text, option)
    if error or address is None:
        raise InputError(error or f"{option}: no address")
    if address.email.lower() not in settings.approvers:
        listed = ", ".join(settings.approvers) or "nobody yet"
        raise InputError(
            f"{option} {address.email}: not in BULLETIN_APPROVERS ({listed}); add the address "
            "to BULLETIN_APPROVERS in .env first"
        )
    return address


@dataclass(frozen=True)
class Requested:
    event: ApprovalEvent
    url: str
    transport: str
    expires: datetime
    message_id: str


def request(
    checked: Checked, settings: Settings, approver_text: str, *, now: datetime | None = None
) -> Requested:
    """Record a request and email the approver their signed link through the transport."""
    from bulletin.tracking import Tracker
    from bulletin.transports import make_transport

    if not (settings.secret and settings.public_url):
        raise ConfigError(
            "set BULLETIN_SECRET and BULLETIN_PUBLIC_URL in .env: the approval link is signed "
            "and points at bulletin events serve"
        )
    checked.raise_for_problems("no approval was requested")
    approver = approver_address(approver_text, settings, "--request")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    expires = now + LINK_LIFETIME
    version = current_version(checked, settings)
    transport = make_transport(settings)
    with Tracker(settings.db_url, timeout=settings.db_timeout) as tracker:
        store = ApprovalStore(tracker)
        result = standing(store, version, settings)
        shown = show(checked, settings, result)
        event = store.add(
            message=version.message,
            path=version.shown,
            fingerprint=version.fingerprint,
            kind=Kind.REQUEST,
            approver=approver.email,
            approver_name=approver.name,
            route=Route.LINK,
            audience=version.audience,
            audience_definition=version.definition,
            text=version.text,
            expires_at=_iso(expires),
            now=_iso(now),
        )
    token = make_token(
        settings.secret, event.id, approver.email, version.fingerprint, int(expires.timestamp())
    )
    url = approve_url(settings.public_url, token)
    compiled = request_email(checked, settings, shown, version, url, expires)
    message_id = _deliver(transport, compiled, approver, event.id)
    return Requested(event, url, transport.name, expires, message_id)


def approve_in_person(
    checked: Checked, settings: Settings, who: str, *, now: datetime | None = None
) -> ApprovalEvent:
    """`--as "Name <address>"`: the approver sits beside the sender and signs here."""
    from bulletin.tracking import Tracker

    checked.raise_for_problems("nothing was approved")
    approver = approver_address(who, settings, "--as")
    version = current_version(checked, settings)
    with Tracker(settings.db_url, timeout=settings.db_timeout) as tracker:
        return ApprovalStore(tracker).add(
            message=version.message,
            path=version.shown,
            fingerprint=version.fingerprint,
            kind=Kind.APPROVED,
            approver=approver.email,
            approver_name=approver.name,
            route=Route.IN_PERSON,
            audience=version.audience,
            audience_definition=version.definition,
            text=version.text,
            now=_iso(now) if now else None,
        )


def request_email(
    checked: Checked,
    settings: Settings,
    shown: Shown,
    version: Version,
    url: str,
    expires: datetime,
):
    """The request as a CompiledEmail without placeholders, so any transport can send it."""
    from markupsafe import Markup

    from bulletin.render import CompiledEmail, Slots, split, template_environment

    environment = template_environment(settings.workdir)
    context = {
        "shown": shown,
        "version": version,
        "url": url,
        "expires": _when(_iso(expires)),
        "sender": " · ".join(s for s in (settings.organisation, settings.unit) if s),
    }
    html_text = environment.get_template("approval_request.html").render(
        context, bulletin=Markup(shown.body_html)
    )
    text = environment.get_template("approval_request.txt").render(context)
    subject = f"Approval requested: {shown.subject}"
    message = replace(checked.message, subject=subject, category="", preheader="")
    return CompiledEmail(
        message=message,
        slots=Slots(),
        subject=split(subject),
        html=split(html_text),
        text=split(text),
        body_html=(),
        placeholders=(),
        subject_keys=frozenset(),
    )


def _deliver(transport, compiled, approver: Address, request_id: int) -> str:
    from bulletin.contacts import Contact
    from bulletin.tracking import State
    from bulletin.transports import Outgoing, Unsent

    contact = Contact(
        email=approver.email, fields={"first_name": approver.name}, file="--request", line=0
    )
    # Named like a send's files in the outbox; `bulletin_test` keeps its events out of the ledger.
    item = Outgoing(
        request_id, contact, "", {"bulletin_send": "approval", "bulletin_test": "approval"}
    )
    transport.open()
    try:
        (outcome,) = transport.send(compiled, [item])
    finally:
        transport.close()
    if outcome.state != State.ACCEPTED:
        raise Unsent(f"the approval request to {approver.email} was not accepted: {outcome.error}")
    return outcome.message_id or ""


# --- times -----------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _when(iso: str | None) -> str:
    """A recorded UTC time as London wall-clock time, e.g. 2016-07-04 07:30 BST."""
    from bulletin.message import LONDON

    if not iso:
        return ""
    return datetime.fromisoformat(iso).astimezone(LONDON).strftime("%Y-%m-%d %H:%M %Z")


# --- the record: status, report, history -----------------------------------------------------


def send_record(tracker, send_id: int) -> dict | None:
    """Who approved a send, when, by which route, and the version it went out as."""
    store = ApprovalStore(tracker)
    versions = store.send_versions(send_id)
    approvals = store.send_approvals(send_id)
    if not versions and not approvals:
        return None
    return {
        "fingerprint": versions[-1].fingerprint if versions else approvals[-1].fingerprint,
        "approvals": [
            {
                "approver": a.approver,
                "name": a.approver_name,
                "route": a.route,
                "at": a.created_at,
                "fingerprint": a.fingerprint,
                "audience": a.audience,
            }
            for a in approvals
        ],
    }


def record_lines(record: dict | None) -> list[str]:
    """The approval record of a send in words, for `status SEND` and the report."""
    if record is None:
        return ["Approved: no approval recorded"]
    lines = [f"Version:  {record['fingerprint']}"]
    if not record["approvals"]:
        lines.append("Approved: no approval recorded")
    for a in record["approvals"]:
        who = f"{a['name']} <{a['approver']}>" if a["name"] else a["approver"]
        lines.append(f"Approved: by {who}, {_when(a['at'])}, {a['route']}")
    return lines


@dataclass(frozen=True)
class HistoryLine:
    at: str  # ISO UTC
    what: str
    fingerprint: str

    def __str__(self) -> str:
        return f"{_when(self.at)}  {self.what}"


def history(tracker, name: str) -> list[HistoryLine]:
    """Versions, requests, approvals, asks for changes and sends of a message, in order."""
    store = ApprovalStore(tracker)
    items: list[tuple[tuple, HistoryLine]] = []  # (order, line)
    events = store.history(name)
    for event in events:
        if event.kind == Kind.REQUEST:
            what = f"approval requested from {event.who} (link until {_when(event.expires_at)})"
        elif event.kind == Kind.APPROVED:
            what = f"approved by {event.who} ({event.route})"
        else:
            what = f'changes asked for by {event.who} ({event.route}): "{event.comment}"'
        items.append(((event.id, 0, 0), HistoryLine(event.created_at, what, event.fingerprint)))
    for send in tracker.sends():
        if send.message != name:
            continue
        versions = store.send_versions(send.id)
        approvals = store.send_approvals(send.id)
        counts = tracker.counts(send.id)
        sent = sum(n for state, n in counts.items() if state not in ("opened", "clicked"))
        who = ", ".join(a.who for a in approvals) or "nobody"
        # After the events recorded before it began (times alone tie within a second).
        after = versions[0].after_event if versions else None
        if after is None:
            after = max((e.id for e in events if e.created_at <= send.created_at), default=0)
        line = HistoryLine(
            send.created_at,
            f"send #{send.id} via {send.transport}: {sent} recipient(s); approved by {who}",
            versions[0].fingerprint if versions else "",
        )
        items.append(((after, 1, send.id), line))
    items.sort(key=lambda pair: pair[0])
    out: list[HistoryLine] = []
    seen: set[str] = set()
    for _, item in items:
        if item.fingerprint and item.fingerprint not in seen:
            seen.add(item.fingerprint)
            out.append(HistoryLine(item.at, f"version {item.fingerprint[:12]}", item.fingerprint))
        out.append(item)
    return out
