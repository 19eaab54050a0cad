"""Public, non-personal pages of sent messages for co-ordinators to share (issue 21).

A co-ordinator who forwards an email passes on "Dear Margaret" and Margaret's own unsubscribe
link. So every sent public message also has a page at `BULLETIN_PUBLIC_URL/m/<reference>`
(and its one-page notice at `…/notice.pdf`), linked from each email's "Share this message"
line:

- **What was sent.** A send keeps the message file's bytes under the content hash it
  records (`record_send`); pages render those bytes, never a later edit of the file.
- **Nobody's details.** Rendered for no contact: every placeholder takes its fallback (`check`
  refuses a public message with a placeholder that has none). No token, no tracking, no
  remote images (an image becomes a link to it), a CSP that loads nothing from elsewhere.
- **Automatic.** Each new send of a public message publishes its page; `public: false` keeps a
  message off (404); `bulletin unpublish REFERENCE` withdraws a page (410, saying so) and
  `bulletin publish MESSAGE` puts it back, or writes it as static files with `-o DIR`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from html import escape, unescape
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote
from zoneinfo import ZoneInfo

from bulletin.config import Settings
from bulletin.errors import InputError
from bulletin.message import Address, Message, load_message, resolve_path

if TYPE_CHECKING:  # the ledger (SQLAlchemy) is imported where pages are stored: `check`,
    # `preview` and `send --dry-run` only need public_base and share_links from here
    from bulletin.ledger.publications import Publication

DEV_PUBLIC_URL = "http://127.0.0.1:8025"  # `bulletin events serve`'s default address
LONDON = ZoneInfo("Europe/London")
_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ATTRIBUTE = r"""\b{}\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))"""


def public_base(settings: Settings) -> str:
    """Where links point: BULLETIN_PUBLIC_URL, or the local server for outbox tests."""
    return (settings.public_url or DEV_PUBLIC_URL).rstrip("/")


def page_path(reference: str) -> str:
    return f"/m/{quote(reference, safe='')}"


def share_links(base: str, reference: str) -> tuple[str, str]:
    """(page URL, notice PDF URL) for a reference under `base`."""
    page = base.rstrip("/") + page_path(reference)
    return page, page + "/notice.pdf"


# --- the ledger side -------------------------------------------------------------------------


def record_send(tracker, message: Message, send_id: int) -> None:
    """A new send began: keep what it sends, and publish its page (or not, if restricted).

    The bytes are read again and kept only if they still hash to what the send recorded;
    otherwise `bulletin publish` says the version is missing rather than show another one.
    """
    from bulletin.ledger.publications import PublicationStore

    store = PublicationStore(tracker)
    try:
        source = message.path.read_bytes()
    except OSError:
        source = b""
    if source and hashlib.sha256(source).hexdigest() == message.content_hash:
        store.keep_source(message.content_hash, message.name, source)
    if message.public:
        store.publish(message.reference, message.name, send_id, message.content_hash)
    else:
        store.remove(message.reference)


@dataclass(frozen=True)
class Published:
    publication: Publication
    message: Message  # as sent
    url: str


def publish(settings: Settings, name: str) -> Published:
    """`bulletin publish MESSAGE`: (re)publish the page of the message's latest send."""
    from bulletin.ledger.publications import PublicationStore
    from bulletin.tracking import Tracker

    path = resolve_path(name, settings.workdir)
    stem = path.stem
    if not settings.db_exists:
        raise InputError(f"{name}: not sent yet; a page shows a sent message, so send it first")
    with Tracker(settings.db_url, timeout=settings.db_timeout) as tracker:
        send = tracker.latest_send(stem)
        if send is None:
            raise InputError(f"{name}: not sent yet; a page shows a sent message, so send it first")
        store = PublicationStore(tracker)
        source = store.source(send.content_hash)
        if source is None and path.is_file():
            current = path.read_bytes()
            if hashlib.sha256(current).hexdigest() == send.content_hash:
                store.keep_source(send.content_hash, stem, current)
                source = current
        if source is None:
            raise InputError(
                f"{send.path}: has changed since send #{send.id} and the version sent was not "
                "kept (sent before bulletin kept them); restore the file as sent, then publish"
            )
        message = sent_message(settings, stem, source)
        if not message.public:
            raise InputError(
                f"{send.path}: the version sent says 'public: false', so it has no public page"
            )
        store.publish(send.reference, stem, send.id, send.content_hash)
        publication = store.publication(send.reference)
    assert publication is not None
    url, _ = share_links(public_base(settings), publication.reference)
    return Published(publication, message, url)


def unpublish(settings: Settings, reference: str) -> Publication:
    """`bulletin unpublish REFERENCE`: the page then answers 410, saying it was withdrawn."""
    from bulletin.ledger.publications import PublicationStore
    from bulletin.tracking import Tracker

    found = None
    if settings.db_exists:
        with Tracker(settings.db_url, timeout=settings.db_timeout) as tracker:
            found = PublicationStore(tracker).withdraw(reference.strip())
    if found is None:
        raise InputError(
            f"{reference}: no public page has this reference; `bulletin status` lists the sends"
        )
    return found


# --- rendering -------------------------------------------------------------------------------


def sent_message(settings: Settings, name: str, source: bytes) -> Message:
    """The message as it was sent, parsed from the kept bytes."""
    path = settings.workdir / "messages" / f"{name}.md"
    message, problems = load_message(
        path, settings.workdir, default_from=settings.sender, raw=source
    )
    if message is None:
        raise InputError(f"{name}: the version sent cannot be read again", problems)
    from bulletin.render import sender_identity

    identity = sender_identity(settings.organisation, settings.unit)
    if message.sender is not None and not message.sender.name and identity:
        message = replace(message, sender=Address(identity, message.sender.email))
    return message


def london_date(moment_iso: str) -> date:
    """The day in London of a ledger time (UTC, ISO 8601)."""
    moment = datetime.fromisoformat(moment_iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(LONDON).date()


def sent_date(publication: Publication) -> date:
    return london_date(publication.sent_at)


def long_date(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def without_remote_images(body_html: str) -> str:
    """Each image as a link to it (by its alt text), or nothing: the page loads nothing else."""

    def attribute(tag: str, name: str) -> str:
        match = re.search(_ATTRIBUTE.format(name), tag, re.IGNORECASE)
        return unescape(next((g for g in match.groups() if g is not None), "")) if match else ""

    def replace_image(match: re.Match) -> str:
        tag = match.group(0)
        src, alt = attribute(tag, "src"), attribute(tag, "alt").strip()
        if src.lower().startswith("data:"):
            return tag
        if not alt:
            return ""
        return f'<a href="{escape(src)}">{escape(alt)}</a>' if src else escape(alt)

    return _IMG.sub(replace_image, body_html)


def _compiled(settings: Settings, message: Message):
    from bulletin.render import compile_email

    compiled, problems = compile_email(
        message, settings.workdir, organisation=settings.organisation, unit=settings.unit
    )
    if compiled is None:
        raise InputError(f"{message.shown}: the page cannot be rendered", problems)
    return compiled


def render_page(
    settings: Settings, publication: Publication, message: Message, *, notice_href: str
) -> str:
    """The public page: the message for nobody in particular, with its reference and date."""
    from markupsafe import Markup

    from bulletin.render import fill, sender_identity, template_environment

    compiled = _compiled(settings, message)
    values = compiled.values(None)
    return (
        template_environment(settings.workdir)
        .get_template("public.html")
        .render(
            subject=fill(compiled.subject, values),
            body=Markup(without_remote_images(compiled.render_body_html(None))),
            reference=publication.reference,
            date=long_date(sent_date(publication)),
            organisation=settings.organisation,
            unit=settings.unit,
            identity=sender_identity(settings.organisation, settings.unit),
            sender_email=message.sender.email if message.sender else "",
            notice_href=notice_href,
        )
    )


def render_withdrawn(settings: Settings, publication: Publication) -> str:
    from bulletin.render import sender_identity, template_environment

    withdrawn = london_date(publication.withdrawn_at or publication.published_at)
    return (
        template_environment(settings.workdir)
        .get_template("withdrawn.html")
        .render(
            reference=publication.reference,
            date=long_date(withdrawn),
            organisation=settings.organisation,
            unit=settings.unit,
            identity=sender_identity(settings.organisation, settings.unit),
        )
    )


def render_notice(settings: Settings, publication: Publication, message: Message) -> bytes:
    """The one-page notice (`bulletin print --notice`'s), dated the day it was sent."""
    from bulletin.render import render_pdf

    return render_pdf(
        _compiled(settings, message),
        [],
        settings.workdir,
        notice=True,
        organisation=settings.organisation,
        unit=settings.unit,
        today=sent_date(publication),
        postal_address=settings.postal_address,
        phone=settings.phone,
    )


def write_static(settings: Settings, published: Published, directory: Path) -> list[Path]:
    """index.html and notice.pdf in `directory`, for the borough's own website."""
    directory.mkdir(parents=True, exist_ok=True)
    page = render_page(settings, published.publication, published.message, notice_href="notice.pdf")
    pdf = render_notice(settings, published.publication, published.message)
    index, notice = directory / "index.html", directory / "notice.pdf"
    index.write_text(page, encoding="utf-8")
    notice.write_bytes(pdf)
    return [index, notice]
