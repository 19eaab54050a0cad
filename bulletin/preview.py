"""What `preview` and `print` produce, as bytes."""

from __future__ import annotations

from dataclasses import dataclass

from bulletin.check import Checked, address_problems, find_contact
from bulletin.config import Settings
from bulletin.errors import InputError, Problem
from bulletin.render import build_mime, mime_bytes, render_pdf

PREVIEW_TOKEN = "preview"


def preview_feedback_url(settings: Settings) -> str:
    """The "Was this useful?" links of a preview (issue 18): they lead to no one's answer."""
    return f"{settings.public_url or 'https://example.org'}/feedback?t={PREVIEW_TOKEN}"


def preview_unsubscribe_url(settings: Settings) -> str:
    return f"{settings.public_url or 'https://example.org'}/unsubscribe?t={PREVIEW_TOKEN}"


def render_preview(
    checked: Checked, settings: Settings, format: str, email: str | None
) -> tuple[bytes, str]:
    """The message for one contact as html / text / pdf / eml bytes, with a file suffix."""
    compiled = checked.compiled
    contact = find_contact(checked, email)
    if format == "pdf":
        pdf = render_pdf(
            compiled,
            [contact],
            settings.workdir,
            organisation=settings.organisation,
            unit=settings.unit,
            postal_address=settings.postal_address,
            phone=settings.phone,
        )
        return pdf, ".pdf"
    url = preview_unsubscribe_url(settings)
    rendered = compiled.render(contact, url, preview_feedback_url(settings))
    if format == "html":
        return rendered.html.encode("utf-8"), ".html"
    if format == "text":
        return f"Subject: {rendered.subject}\n\n{rendered.text}".encode(), ".txt"
    if contact is None or not contact.email:
        raise InputError("eml needs a contact with an email address; use --contact EMAIL")
    mime = build_mime(compiled, rendered, contact.email, to_name=contact.name, unsubscribe_url=url)
    return mime_bytes(mime), ".eml"


@dataclass(frozen=True)
class Printed:
    pdf: bytes  # b"" when no letter could be printed
    count: int  # letters printed (1 for a notice)
    refused: list[Problem]  # contacts whose address does not fit the envelope window


def render_print(
    checked: Checked, settings: Settings, *, notice: bool, duplex: bool = False
) -> Printed:
    """Letters for the postal-only contacts in the audience, or one notice.

    A contact whose address cannot fit the envelope window is refused (listed, not printed);
    the others are still printed.
    """
    refused = [] if notice else address_problems(checked.postal)
    unfit = {(p.file, p.line) for p in refused}
    targets = [None] if notice else [c for c in checked.postal if (c.file, c.line) not in unfit]
    if not targets and not refused:
        raise InputError(
            f"{checked.message.shown}: no postal-only contacts in the audience "
            "(they have address and postcode but no email); "
            "use --notice for a notice-board version"
        )
    pdf = b""
    if targets:
        pdf = render_pdf(
            checked.compiled,
            targets,
            settings.workdir,
            notice=notice,
            organisation=settings.organisation,
            unit=settings.unit,
            postal_address=settings.postal_address,
            phone=settings.phone,
            duplex=duplex,
        )
    return Printed(pdf, len(targets), refused)
