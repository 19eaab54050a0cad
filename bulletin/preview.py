"""What `preview` and `print` produce, as bytes."""

from __future__ import annotations

from bulletin.check import Checked, find_contact
from bulletin.config import Settings
from bulletin.errors import InputError
from bulletin.render import build_mime, mime_bytes, render_pdf

PREVIEW_TOKEN = "preview"


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
        )
        return pdf, ".pdf"
    url = preview_unsubscribe_url(settings)
    rendered = compiled.render(contact, url)
    if format == "html":
        return rendered.html.encode("utf-8"), ".html"
    if format == "text":
        return f"Subject: {rendered.subject}\n\n{rendered.text}".encode(), ".txt"
    if contact is None or not contact.email:
        raise InputError("eml needs a contact with an email address; use --contact EMAIL")
    mime = build_mime(compiled, rendered, contact.email, to_name=contact.name, unsubscribe_url=url)
    return mime_bytes(mime), ".eml"


def render_print(checked: Checked, settings: Settings, *, notice: bool) -> tuple[bytes, int]:
    """Letters for the postal-only contacts in the audience, or one notice."""
    targets = [None] if notice else checked.postal
    if not targets:
        raise InputError(
            f"{checked.message.shown}: no postal-only contacts in the audience "
            "(they have address and postcode but no email); "
            "use --notice for a notice-board version"
        )
    pdf = render_pdf(
        checked.compiled,
        targets,
        settings.workdir,
        notice=notice,
        organisation=settings.organisation,
        unit=settings.unit,
    )
    return pdf, len(targets)
