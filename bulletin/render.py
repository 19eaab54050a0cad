"""Message + contact → subject, HTML, text, MIME and PDF.

The expensive work (Markdown, sanitising, the Jinja2 layout, CSS inlining) happens once per
message in `compile_email`, with each placeholder standing as a private-use token. Each
recipient then costs one join over pre-split parts, with values HTML-escaped for the HTML
part and left as they are for the text part — cheap enough for 100,000 recipients.
"""

from __future__ import annotations

import base64
import binascii
import html
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from importlib import resources
from pathlib import Path

from bulletin import fields
from bulletin.contacts import Contact
from bulletin.errors import InputError, Problem
from bulletin.markup import RULE_WIDTH, URL_SCHEMES, html_to_text, markdown_to_html
from bulletin.message import Message

UNSUBSCRIBE = "@unsubscribe"  # the slot for the per-recipient unsubscribe link
SUBJECT_RULE = "@subject_rule"  # "=====" under this recipient's subject, short (email.txt)
URL_OF = "@url:"  # "@url:N": slot N's value where it starts a link, with its scheme checked
# A slot whose value would start an href/src decides the link's scheme (javascript:…).
_URL_START = re.compile("((?:href|src)\\s*=\\s*[\"']?)\ue000(\\d+)\ue001", re.IGNORECASE)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_URL_CONTROL = re.compile(r"[\x00-\x20\x7f]+")
_TOKEN = re.compile("\ue000(\\d+)\ue001")
# Bodies are encoded with BODY_POLICY (quoted-printable lines ≤ 76 columns), but headers
# are written with this one: List-Unsubscribe must stay on one unfolded line, and the
# standard policy would turn a long URL into encoded-words. 998 is SMTP's hard limit.
MAIL_POLICY = SMTP.clone(max_line_length=998)
BODY_POLICY = SMTP.clone(max_line_length=76)  # RFC 2045: encoded lines ≤ 76

Part = str | int  # literal text, or the index of a slot filled per recipient


def token(index: int) -> str:
    return f"\ue000{index}\ue001"


def split(text: str) -> tuple[Part, ...]:
    """Split rendered text at the tokens into literals and slot numbers."""
    pieces = _TOKEN.split(text)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(pieces) if i % 2 or p)


def fill(parts: Sequence[Part], values: Sequence[str]) -> str:
    return "".join(p if isinstance(p, str) else values[p] for p in parts)


def packaged_templates() -> Path:
    return Path(str(resources.files("bulletin") / "data" / "templates"))


def template_environment(workdir: Path):
    """Our own layouts: `templates/` in the working folder overrides the packaged ones."""
    import jinja2

    folders = [workdir / "templates", packaged_templates()]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders if f.is_dir()]),
        autoescape=jinja2.select_autoescape(["html", "htm", "xml"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def template_problem(error: Exception, workdir: Path) -> Problem:
    """A Jinja2 error in one of our layouts as `templates/NAME:LINE: …`."""
    name = getattr(error, "filename", None) or getattr(error, "name", None) or "templates"
    try:
        name = str(Path(name).relative_to(workdir))
    except ValueError:
        if Path(str(name)).is_absolute():
            name = f"templates/{Path(name).name} (packaged)"
    return Problem(name, getattr(error, "lineno", None), f"template error: {error}")


class Slots:
    """The placeholders of one message, numbered; `token_for` hands out their tokens."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []  # (field key, fallback)
        self._index: dict[tuple[str, str], int] = {}

    def token_for(self, key: str, fallback: str = "") -> str:
        slot = (key, fallback)
        if slot not in self._index:
            self._index[slot] = len(self.keys)
            self.keys.append(slot)
        return token(self._index[slot])

    def substitute(self, segments: list[fields.Segment]) -> str:
        return "".join(
            s if isinstance(s, str) else self.token_for(s.key, s.fallback) for s in segments
        )

    def index_of(self, key: str) -> int | None:
        return self._index.get((key, ""))

    def guard_urls(self, html_text: str) -> str:
        """Give each slot that starts a link its own slot whose value has a safe scheme."""
        return _URL_START.sub(
            lambda m: m.group(1) + self.token_for(f"{URL_OF}{m.group(2)}"), html_text
        )

    def values(self, contact: Contact | None, unsubscribe_url: str = "") -> list[str]:
        get = contact.fields.get if contact is not None else {}.get
        out: list[str] = []
        for key, fallback in self.keys:
            if key == UNSUBSCRIBE:
                out.append(unsubscribe_url)
            elif key.startswith(URL_OF):  # always after the slot it refers to
                out.append(safe_url(out[int(key[len(URL_OF) :])]))
            else:
                out.append(get(key) or fallback)
        return out


def safe_url(value: str) -> str:
    """The value if its scheme is one we allow in links (or it has none), else empty."""
    # Browsers drop tabs, newlines and control characters inside URLs ("java\tscript:").
    bare = _URL_CONTROL.sub("", value)
    scheme = _SCHEME.match(bare)
    if scheme and scheme.group(1).lower() not in URL_SCHEMES:
        return ""
    return value


class _Recipient:
    """`recipient.NAME` in our layouts: a token for that contact field."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._slots.token_for(fields.field_key(name))

    __getitem__ = __getattr__


@dataclass(frozen=True)
class Rendered:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class CompiledEmail:
    message: Message
    slots: Slots
    subject: tuple[Part, ...]
    html: tuple[Part, ...]
    text: tuple[Part, ...]
    body_html: tuple[Part, ...]  # the body alone, for print
    placeholders: tuple[fields.Placeholder, ...]
    subject_keys: frozenset[str]

    def values(self, contact: Contact | None, unsubscribe_url: str = "") -> list[str]:
        values = self.slots.values(contact, unsubscribe_url)
        rule = self.slots.index_of(SUBJECT_RULE)
        if rule is not None:
            values[rule] = "=" * min(len(fill(self.subject, values)), RULE_WIDTH)
        return values

    def render(self, contact: Contact | None, unsubscribe_url: str = "") -> Rendered:
        values = self.values(contact, unsubscribe_url)
        escaped = [html.escape(v) for v in values]
        subject = fill(self.subject, values)
        if fields.has_line_break(subject):
            where = contact.where if contact else "message"
            raise InputError(f"{where}: a field used in the subject contains a line break")
        return Rendered(subject, fill(self.html, escaped), fill(self.text, values))

    def render_body_html(self, contact: Contact | None) -> str:
        return fill(self.body_html, [html.escape(v) for v in self.values(contact)])


_BLOCKQUOTE_OPEN = re.compile(r"<blockquote\b[^>]*>", re.IGNORECASE)


def callout_quotes(body_html: str) -> str:
    """Each block quote inside a one-cell table: Outlook's Word engine drops a blockquote's
    padding and border, but keeps a table cell's (issue 15, item 8)."""
    body_html = _BLOCKQUOTE_OPEN.sub(
        lambda m: (
            '<table role="presentation" class="quote" width="100%" cellpadding="0" '
            'cellspacing="0" border="0"><tr><td class="quote-cell">' + m.group(0)
        ),
        body_html,
    )
    return re.sub(
        r"</blockquote>", "</blockquote></td></tr></table>", body_html, flags=re.IGNORECASE
    )


def sender_identity(organisation: str, unit: str) -> str:
    """The one name a recipient sees: From, masthead and footer (issue 15, item 9)."""
    return ", ".join(part for part in (organisation, unit) if part)


def compile_email(
    message: Message,
    workdir: Path,
    *,
    organisation: str = "",
    unit: str = "",
    privacy_url: str = "",
    share_base: str = "",
) -> tuple[CompiledEmail | None, list[Problem]]:
    """Render the message once with tokens for every placeholder; list every problem.

    `share_base`: BULLETIN_PUBLIC_URL, for the share line of a public message (issue 21).
    """
    import jinja2

    from bulletin.publish import share_links

    problems: list[Problem] = []
    slots = Slots()
    subject_segments, subject_problems = fields.parse(
        message.subject, file=message.shown, first_line=message.line_of("subject") or 1
    )
    preheader_segments, preheader_problems = fields.parse(
        message.preheader, file=message.shown, first_line=message.line_of("preheader") or 1
    )
    body_segments, body_problems = fields.parse(
        message.body, file=message.shown, first_line=message.body_line
    )
    problems += subject_problems + preheader_problems + body_problems

    subject = slots.substitute(subject_segments)
    preheader = slots.substitute(preheader_segments)
    body_html = markdown_to_html(slots.substitute(body_segments))
    body_text = html_to_text(body_html)
    sender = message.sender
    context = {
        "subject": subject,
        "preheader": preheader,
        "reference": message.reference,
        "organisation": organisation,
        "unit": unit,
        "sender_name": sender.name if sender else "",
        "identity": sender_identity(organisation, unit),
        "privacy_url": privacy_url,
        "sender_email": sender.email if sender else "",
        "unsubscribe_url": slots.token_for(UNSUBSCRIBE),
        "subject_rule": slots.token_for(SUBJECT_RULE),
        "recipient": _Recipient(slots),
    }
    share = share_links(share_base, message.reference) if share_base and message.public else None
    context["share_url"], context["notice_url"] = share or ("", "")
    environment = template_environment(workdir)
    try:
        html_layout = environment.get_template("email.html").render(
            context, body=jinja2.utils.markupsafe.Markup(callout_quotes(body_html))
        )
        text_layout = environment.get_template("email.txt").render(context, body=body_text)
    except jinja2.TemplateError as error:
        problems.append(template_problem(error, workdir))
        return None, problems
    import css_inline

    # keep_at_rules: the @media rules for narrow screens must survive inlining.
    inlined = slots.guard_urls(css_inline.CSSInliner(keep_at_rules=True).inline(html_layout))
    body_html = slots.guard_urls(body_html)
    placeholders = tuple(fields.placeholders(subject_segments + preheader_segments + body_segments))
    return CompiledEmail(
        message=message,
        slots=slots,
        subject=split(subject),
        html=split(inlined),
        text=split(text_layout),
        body_html=split(body_html),
        placeholders=placeholders,
        subject_keys=frozenset(p.key for p in fields.placeholders(subject_segments)),
    ), problems


ADDRESS_HEADERS = ("From", "To", "Reply-To")


def mailbox(name: str, address: str) -> str:
    """`Name <address>` as written in the header: printable ASCII, on one line, never re-parsed.

    Given `=?utf-8?…?= <address>`, the email package decodes the name, then re-encodes only
    part of it when writing, so a contact named `é Evil <evil@example.com>, Eve` became a
    second To address, and one named `=?utf-8?b?QmNjOiBldmlsQGV4YW1wbGUuY29t?=` became
    `evil@example.com` (issue 8). So a name that is not plain ASCII is written here as
    RFC 2047 encoded-words, which decode to exactly the name and nothing else.
    """
    if not name:
        return address
    if _PLAIN_HEADER.match(name) and "=?" not in name:
        value = formataddr((name, address))  # quotes a name with specials in it
    else:
        words, chunk = [], b""
        for character in name:
            encoded = character.encode("utf-8")
            if len(chunk) + len(encoded) > 45:  # an encoded-word stays within 75 characters
                cut = chunk.rfind(b" ") + 1 or len(chunk)  # between words where possible
                words.append(chunk[:cut])
                chunk = chunk[cut:]
            chunk += encoded
        words.append(chunk)
        value = " ".join(f"=?utf-8?b?{base64.b64encode(w).decode()}?=" for w in words)
        value += f" <{address}>"
    return value if len(value) <= 900 else address  # a name that long is not shown


def _headers(
    compiled: CompiledEmail,
    rendered: Rendered,
    to: str,
    to_name: str,
    unsubscribe_url: str,
    message_id: str | None,
    extra_headers: dict[str, str] | None,
    now: datetime | None,
) -> list[tuple[str, str]]:
    """The top-level headers of one recipient's message, in order."""
    message = compiled.message
    sender = message.sender
    if sender is None:
        raise InputError(f"{message.shown}: no sender; add 'from:' or set BULLETIN_FROM")
    headers = [("From", mailbox(sender.name, sender.email)), ("To", mailbox(to_name, to))]
    if message.reply_to:
        headers.append(("Reply-To", mailbox(message.reply_to.name, message.reply_to.email)))
    headers.append(("Subject", rendered.subject))
    headers.append(("Date", format_datetime(now or datetime.now().astimezone())))
    domain = sender.email.rsplit("@", 1)[-1]
    headers.append(("Message-ID", message_id or make_msgid(domain=domain)))
    if unsubscribe_url:
        headers.append(("List-Unsubscribe", f"<{unsubscribe_url}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    if message.category:
        headers.append(("X-Bulletin-Category", message.category))
    headers.append(("X-Bulletin-Reference", message.reference))
    headers.extend((extra_headers or {}).items())
    return headers


def build_mime(
    compiled: CompiledEmail,
    rendered: Rendered,
    to: str,
    *,
    to_name: str = "",
    unsubscribe_url: str = "",
    message_id: str | None = None,
    extra_headers: dict[str, str] | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """The full multipart/alternative message as it would be sent over SMTP."""
    mime = EmailMessage(policy=BODY_POLICY)
    for name, value in _headers(
        compiled, rendered, to, to_name, unsubscribe_url, message_id, extra_headers, now
    ):
        if name in ADDRESS_HEADERS:
            mime.set_raw(name, value)  # already encoded: parsing it again would undo that
        else:
            mime[name] = value
    mime.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    mime.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return mime


_PLAIN_HEADER = re.compile(r"[\x20-\x7e]*\Z")
_PART = (
    b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)


def message_bytes(
    compiled: CompiledEmail,
    rendered: Rendered,
    to: str,
    *,
    to_name: str = "",
    unsubscribe_url: str = "",
    message_id: str | None = None,
    extra_headers: dict[str, str] | None = None,
    now: datetime | None = None,
) -> bytes:
    """`mime_bytes(build_mime(…))` written directly: what the SMTP and outbox transports send.

    The same headers in the same order and the same multipart/alternative of quoted-printable
    UTF-8 text and HTML, about twenty times faster: the email package's header parser and
    generator were most of an SMTP send (issue 7). Printable ASCII headers are written as
    they are; any other is folded by the email package, as build_mime's would be.
    """
    lines = []
    for name, value in _headers(
        compiled, rendered, to, to_name, unsubscribe_url, message_id, extra_headers, now
    ):
        if "\r" in value or "\n" in value:  # as EmailMessage refuses them
            raise ValueError(f"header {name} contains a line break")
        if len(name) + len(value) < 996 and _PLAIN_HEADER.match(value):
            lines.append(f"{name}: {value}\r\n".encode("ascii"))
        else:
            lines.append(MAIL_POLICY.fold_binary(*MAIL_POLICY.header_store_parse(name, value)))
    boundary = ("=" * 15 + f"{random.randrange(sys.maxsize):019d}==").encode("ascii")
    lines += [
        b"MIME-Version: 1.0\r\n",
        b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
        b"--" + boundary + b"\r\n",
        _PART % b"plain",
        _quoted_printable(rendered.text),
        b"\r\n--" + boundary + b"\r\n",
        _PART % b"html",
        _quoted_printable(rendered.html),
        b"\r\n--" + boundary + b"--\r\n",
    ]
    return b"".join(lines)


def _quoted_printable(text: str) -> bytes:
    """UTF-8, quoted-printable (lines ≤ 76), CRLF line ends, as the email package encodes it."""
    lines = text.encode("utf-8").splitlines()
    encoded = binascii.b2a_qp(b"\n".join(lines) + b"\n", istext=True)
    return encoded.replace(b"\n", b"\r\n")


def mime_bytes(mime: EmailMessage) -> bytes:
    """The message as sent: CRLF line ends, headers unfolded."""
    return mime.as_bytes(policy=MAIL_POLICY)


@dataclass(frozen=True)
class Letter:
    recipient: object | None
    body: object


@dataclass(frozen=True)
class PostalRecipient:
    name: str
    address_lines: list[str]
    postcode: str
    lines: tuple = ()  # address.Line: the block as printed, fitted to the window
    size: float = 12.0  # its type size in pt


def postal_recipient(contact: Contact) -> PostalRecipient:
    """The contact's address block, fitted to the envelope window (bulletin/address.py)."""
    from bulletin.address import address_lines, fit_contact

    fit = fit_contact(contact)
    if not fit.ok:
        raise InputError(f"{contact.where}: {fit.problem}")
    lines = address_lines("", contact.get("address"))
    return PostalRecipient(contact.name, lines, contact.get("postcode"), fit.lines, fit.size)


def render_pdf(
    compiled: CompiledEmail,
    contacts: Sequence[Contact | None],
    workdir: Path,
    *,
    notice: bool = False,
    organisation: str = "",
    unit: str = "",
    today: date | None = None,
    postal_address: str = "",
    phone: str = "",
    duplex: bool = False,
) -> bytes:
    """One PDF: a letter per contact (None = no address block), or a one-page notice.

    `duplex` adds a blank back page to each letter with an odd number of pages, so the next
    letter starts on a fresh sheet. A notice that needs more than one page is an error.
    """
    import jinja2
    from weasyprint import HTML

    from bulletin.notice import derive_notice

    environment = template_environment(workdir)
    day = today or date.today()
    base = workdir / "templates"
    if not (base / "print.css").is_file():
        base = packaged_templates()
    url = str(base) + "/"
    context = {
        "reference": compiled.message.reference,
        "organisation": organisation,
        "unit": unit,
        "date": f"{day.day} {day:%B %Y}",
        "postal_address": [ln.strip() for ln in postal_address.split(",") if ln.strip()],
        "phone": phone.strip(),
    }

    def page_for(letter: Letter, subject: str, version) -> str:
        return _print_page(environment, workdir, [letter], subject, version, context)

    if notice:
        message = compiled.message
        subject = fill(compiled.subject, compiled.values(None))
        version = message.notice or derive_notice(subject, compiled.render_body_html(None))
        letter = Letter(None, jinja2.utils.markupsafe.Markup(compiled.render_body_html(None)))
        while True:
            document = HTML(string=page_for(letter, subject, version), base_url=url).render()
            if len(document.pages) == 1 or not (version.derived and version.points):
                break
            version = version.without_longest_point()  # a derived notice sheds detail to fit
        if len(document.pages) > 1:
            line = message.line_of("notice") if message.notice else None
            advice = "shorten its headline or points" if line else "add a shorter 'notice:'"
            raise InputError(
                f"{message.shown}{f':{line}' if line else ''}: the notice needs "
                f"{len(document.pages)} pages, not one A4 page; {advice}"
            )
        return document.write_pdf()
    # One document per letter so "Page N of M" counts each letter's own pages, then join.
    # Each letter has its own recipient's subject (it may hold placeholders).
    documents = []
    blank = None
    for contact in contacts:
        letter = Letter(
            postal_recipient(contact) if contact is not None else None,
            jinja2.utils.markupsafe.Markup(compiled.render_body_html(contact)),
        )
        subject = fill(compiled.subject, compiled.values(contact))
        documents.append(HTML(string=page_for(letter, subject, None), base_url=url).render())
        if duplex and len(documents[-1].pages) % 2:
            blank = blank or HTML(string=BLANK_PAGE).render()
            documents.append(blank)
    pages = [page for document in documents for page in document.pages]
    return documents[0].copy(pages).write_pdf()


BLANK_PAGE = "<style>@page { size: A4; margin: 0 }</style>"


def _print_page(
    environment, workdir: Path, letters: list[Letter], subject: str, notice, context: dict
) -> str:
    import jinja2

    try:
        return environment.get_template("print.html").render(
            context, subject=subject, notice=notice, letters=letters
        )
    except jinja2.TemplateError as error:
        raise InputError("", [template_problem(error, workdir)]) from None
