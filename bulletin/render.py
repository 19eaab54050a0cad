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
from functools import cached_property
from importlib import resources
from pathlib import Path

from bulletin import fields
from bulletin.contacts import Contact
from bulletin.errors import InputError, Problem
from bulletin.markup import RULE_WIDTH, URL_SCHEMES, html_to_text, markdown_to_html
from bulletin.message import Message

UNSUBSCRIBE = "@unsubscribe"  # the slot for the per-recipient unsubscribe link
FEEDBACK = "@feedback"  # the slot for the per-recipient "Was this useful?" page (issue 18)
SUBJECT_RULE = "@subject_rule"  # "=====" under this recipient's subject, short (email.txt)
URL_OF = "@url:"  # "@url:N": link N (an href/src holding slots) filled, its scheme checked
# An href/src whose value holds a slot: the whole final URL decides its scheme (issue 12:
# `java{{ x }}`, `{{ base }}{{ path }}`, `&#9;{{ x }}` all made javascript: links).
_URL_ATTRIBUTE = re.compile(
    r"""(\b(?:href|src)\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE
)
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
    return "".join([p if isinstance(p, str) else values[p] for p in parts])


def packaged_templates() -> Path:
    return Path(str(resources.files("bulletin") / "data" / "templates"))


def template_environment(workdir: Path):
    """Our own layouts: `templates/` in the working folder overrides the packaged ones.

    Sandboxed: an edited template cannot reach Python (`cycler.__init__.__globals__`, issue 12).
    """
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    folders = [workdir / "templates", packaged_templates()]
    return SandboxedEnvironment(
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
        self.links: list[tuple[Part, ...]] = []  # href/src values holding slots (URL_OF)
        self._index: dict[tuple[str, str], int] = {}
        self._made: _SlotPlan | None = None
        self._verdicts: dict[str, bool] = {}  # url_allowed of link values seen (bounded)
        self._checker = None  # (slots when made, the function `unsafe_links` calls)

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
        """Make each href/src that holds a slot one slot of its own, checked once filled."""

        def guard(match: re.Match[str]) -> str:
            value = next(v for v in match.group(2, 3, 4) if v is not None)
            if "\ue000" not in value:
                return match.group(0)
            self.links.append(split(html.unescape(value)))
            return f'{match.group(1)}"{self.token_for(f"{URL_OF}{len(self.links) - 1}")}"'

        return _URL_ATTRIBUTE.sub(guard, html_text)

    def values(
        self, contact: Contact | None, unsubscribe_url: str = "", feedback_url: str = ""
    ) -> list[str]:
        """Every slot's value for this contact: fields (or fallbacks), our URLs, checked links.

        Once per recipient, 100,000 times a send: every slot is first read as a field, then
        our URLs and the links (made of the slots before them) are put in their places.
        """
        plan = self._made
        if plan is None or plan.count != len(self.keys):
            plan = self._plan()
        get = contact.fields.get if contact is not None else _NO_FIELDS.get
        out = [get(key) or fallback for key, fallback in self.keys]
        for index in plan.unsubscribe:
            out[index] = unsubscribe_url
        for index in plan.feedback:
            out[index] = feedback_url
        verdicts = self._verdicts
        for index, slot, tail, link in plan.links:
            # A slot and the text after it (`{{ feedback_url }}&a=useful`): 4 times faster
            # than str.format.
            url = link.format(*out) if slot is None else out[slot] + tail
            if not url.startswith(_ALLOWED_PREFIXES):
                allowed = verdicts.get(url)
                if allowed is None:  # remembered: a link to "" + "&a=useful" in every dry run
                    allowed = url_allowed(url)
                    if len(verdicts) < _CACHE_LIMIT:
                        verdicts[url] = allowed
                if not allowed:
                    url = ""
            out[index] = url
        return out

    def _plan(self) -> _SlotPlan:
        """Where our URLs and the links go; made once every slot is known (after compiling)."""
        plan = self._made
        if plan is None or plan.count != len(self.keys):
            plan = self._made = _SlotPlan(
                count=len(self.keys),
                unsubscribe=tuple(i for i, (k, _) in enumerate(self.keys) if k == UNSUBSCRIBE),
                feedback=tuple(i for i, (k, _) in enumerate(self.keys) if k == FEEDBACK),
                links=tuple(
                    (i, *_slot_and_tail(self.links[int(k[len(URL_OF) :])]))
                    for i, (k, _) in enumerate(self.keys)
                    if k.startswith(URL_OF)
                ),
            )
            for index, (key, _) in enumerate(self.keys):  # as filling slot by slot would fail
                if key.startswith(URL_OF):
                    parts = self.links[int(key[len(URL_OF) :])]
                    if any(isinstance(p, int) and p >= index for p in parts):
                        raise IndexError("a link is made of a slot after its own")
        return plan

    def unsafe_links(self, contact: Contact | None) -> list[str]:
        """The links this contact's values would turn into a refused scheme (for `check`).

        As `check` sees them: our own URLs empty. Only a link holding a contact's field can
        differ from one contact to the next; the others are judged once. A link's verdict is
        remembered by the values of the fields it holds (a ward, a scheme name repeat).
        """
        checker = self._checker
        if checker is None or checker[0] != len(self.keys):
            checker = self._checker = (len(self.keys), self._link_checker())
        return checker[1](contact)

    def _link_checker(self):
        ours = {i for i, (key, _) in enumerate(self.keys) if key in (UNSUBSCRIBE, FEEDBACK)}
        links = {i for i, (key, _) in enumerate(self.keys) if key.startswith(URL_OF)}
        # (None, unsafe URL or None) | (field slots, pattern, cache) | (parts,)
        verdicts: list[tuple] = []
        for parts in self.links:
            used = sorted({p for p in parts if isinstance(p, int) and p not in ours})
            if links.intersection(used):  # a layout naming a link's own slot: the long way
                verdicts.append((parts,))
                continue
            if not used:
                url = fill(parts, [""] * len(self.keys))
                verdicts.append((None, None if url_allowed(url) else url))
                continue
            # The link with only its fields' values in place ({0}, {1}, … in order).
            numbering = {slot: n for n, slot in enumerate(used)}
            numbered = tuple(
                p if isinstance(p, str) else "" if p in ours else numbering[p] for p in parts
            )
            slots = tuple(self.keys[slot] for slot in used)
            verdicts.append((slots, pattern(numbered), {}))
        if all(verdict[0] is None for verdict in verdicts):  # no link holds a contact's field
            same = [verdict[1] for verdict in verdicts if verdict[1] is not None]
            return lambda contact: list(same)

        def unsafe(contact: Contact | None) -> list[str]:
            get = contact.fields.get if contact is not None else _NO_FIELDS.get
            found = []
            for verdict in verdicts:
                if len(verdict) == 1:
                    url = fill(verdict[0], self.values(contact))
                    if not url_allowed(url):
                        found.append(url)
                    continue
                if verdict[0] is None:
                    if verdict[1] is not None:
                        found.append(verdict[1])
                    continue
                slots, text, cache = verdict
                values = tuple(get(key) or fallback for key, fallback in slots)
                if values in cache:
                    url = cache[values]
                else:
                    url = text.format(*values)
                    url = None if url.startswith(_ALLOWED_PREFIXES) or url_allowed(url) else url
                    if len(cache) < _CACHE_LIMIT:
                        cache[values] = url
                if url is not None:
                    found.append(url)
            return found

        return unsafe


@dataclass(frozen=True)
class _SlotPlan:
    count: int  # slots when made
    unsubscribe: tuple[int, ...]
    feedback: tuple[int, ...]
    # (slot, the link's slot and the text after it, or None and "", its str.format pattern)
    links: tuple[tuple[int, int | None, str, str], ...]


def _slot_and_tail(parts: Sequence[Part]) -> tuple[int | None, str, str]:
    """A link's parts as (slot, tail, pattern): `out[slot] + tail` when the link is one slot
    and perhaps text after it, else `pattern.format(*out)`."""
    if parts and isinstance(parts[0], int) and all(isinstance(p, str) for p in parts[1:]):
        return parts[0], "".join(parts[1:]), pattern(parts)
    return None, "", pattern(parts)


_NO_FIELDS: dict[str, str] = {}
_CACHE_LIMIT = 10_000  # verdicts remembered per link (one per distinct set of field values)


def pattern(parts: Sequence[Part]) -> str:
    """`parts` as a str.format pattern: `pattern(parts).format(*values) == fill(parts, values)`.

    For a link (a few parts) str.format is twice as fast as `fill`; for a whole layout it is
    ten times slower (it scans every character, and CSS is full of braces): that is `fill`'s.
    """
    return "".join(
        p.replace("{", "{{").replace("}", "}}") if isinstance(p, str) else f"{{{p}}}" for p in parts
    )


# A URL starting with one of these (lower case, nothing before it) has an allowed scheme:
# the same verdict as url_allowed, without its regular expressions (test_render_fast_paths).
_ALLOWED_PREFIXES = tuple(f"{scheme}:" for scheme in sorted(URL_SCHEMES))


def safe_url(value: str) -> str:
    """The value if its scheme is one we allow in links (or it has none), else empty."""
    return value if url_allowed(value) else ""


def url_allowed(value: str) -> bool:
    """True if a final URL's scheme is https, http, mailto or tel, or it has none."""
    if value.startswith(_ALLOWED_PREFIXES):
        return True
    # Browsers drop tabs, newlines and control characters inside URLs ("java\tscript:").
    scheme = _SCHEME.match(_URL_CONTROL.sub("", value))
    return not scheme or scheme.group(1).lower() in URL_SCHEMES


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

    def values(
        self, contact: Contact | None, unsubscribe_url: str = "", feedback_url: str = ""
    ) -> list[str]:
        values = self.slots.values(contact, unsubscribe_url, feedback_url)
        rule, underline = self._subject_rule
        if rule is not None:
            values[rule] = underline or "=" * min(len(fill(self.subject, values)), RULE_WIDTH)
        return values

    @cached_property
    def _subject_rule(self) -> tuple[int | None, str]:
        """The rule's slot, and the rule itself when the subject holds no placeholder."""
        rule = self.slots.index_of(SUBJECT_RULE)
        if any(isinstance(p, int) for p in self.subject):
            return rule, ""
        return rule, "=" * min(len(fill(self.subject, [])), RULE_WIDTH)

    def render(
        self, contact: Contact | None, unsubscribe_url: str = "", feedback_url: str = ""
    ) -> Rendered:
        values = self.values(contact, unsubscribe_url, feedback_url)
        escaped = values.copy()  # escaped where the HTML layout shows them
        for index in self._html_slots:
            escaped[index] = html.escape(values[index])
        subject = fill(self.subject, values)
        if fields.has_line_break(subject):
            where = contact.where if contact else "message"
            raise InputError(f"{where}: a field used in the subject contains a line break")
        return Rendered(subject, fill(self.html, escaped), fill(self.text, values))

    def unsafe_links(self, contact: Contact | None) -> list[str]:
        """The links this contact's values would turn into a refused scheme (for `check`)."""
        return self.slots.unsafe_links(contact)

    @cached_property
    def _html_slots(self) -> tuple[int, ...]:
        return tuple(sorted({p for p in self.html if isinstance(p, int)}))

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


_SLOT_MARK = re.compile("[\ue000\ue001]")


def _without_slot_marks(message: Message, problems: list[Problem]) -> Message:
    """U+E000/U+E001 mark our placeholder slots: refuse them in a message (issue 12).

    Left in, `\ue00042\ue001` in a body made `send` raise IndexError mid-batch, and a smaller
    number put another slot's value (the unsubscribe URL) into the text. They are reported
    and replaced by U+FFFD, so rendering never trips over them.
    """
    import dataclasses

    changes = {}
    for name in ("subject", "preheader", "body", "reference", "category"):
        value = getattr(message, name, None)
        if isinstance(value, str) and _SLOT_MARK.search(value):
            key = {"body": None}.get(name, name)
            line = message.body_line if key is None else message.line_of(key) or 1
            if key is None:
                line += value[: _SLOT_MARK.search(value).start()].count("\n")
            problems.append(
                Problem(
                    message.shown,
                    line,
                    f"{name} contains a private-use character (U+E000/U+E001) that bulletin "
                    "uses internally; remove it",
                )
            )
            changes[name] = _SLOT_MARK.sub("\ufffd", value)
    return dataclasses.replace(message, **changes) if changes else message


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
    message = _without_slot_marks(message, problems)
    organisation, unit = _SLOT_MARK.sub("\ufffd", organisation), _SLOT_MARK.sub("\ufffd", unit)
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
        # "Was this useful?" (issue 18): the question, or None; the link adds `&a=ANSWER`.
        "feedback": message.feedback,
        "feedback_url": slots.token_for(FEEDBACK) if message.feedback else "",
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
TEXT_HEADERS = ("Subject", "X-Bulletin-Category", "X-Bulletin-Reference")


def encoded_words(text: str, size: int = 45) -> list[str]:
    """`text` as RFC 2047 encoded-words (UTF-8, base64) that decode to exactly `text`.

    Chunks end between words where possible and never inside a character; each word stays
    within 75 characters.
    """
    words, chunk = [], b""
    for character in text:
        encoded = character.encode("utf-8", "surrogatepass")
        if len(chunk) + len(encoded) > size:
            cut = chunk.rfind(b" ") + 1 or len(chunk)  # between words where possible
            words.append(chunk[:cut])
            chunk = chunk[cut:]
        chunk += encoded
    words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w).decode()}?=" for w in words]


def header_text(value: str) -> str:
    """An unstructured header value (subject, category, reference) ready to write as it is.

    Printable ASCII is written as it is. Anything else, and any value holding `=?`, is
    written here as encoded-words folded onto lines of their own, so the email package never
    parses it: its parser decodes encoded-words and a refold then wrote a decoded CR/LF as a
    real line break (CVE-2024-6923, not fixed in every 3.11/3.12 build). A contact named
    `=?utf-8?b?DQpCY2M6IGV2aWxAZXZpbC5leGFtcGxl?=` therefore stays that text (issue 12).
    """
    if _PLAIN_HEADER.match(value) and "=?" not in value and len(value) <= 900:
        return value
    return "\r\n ".join(encoded_words(value))


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
        value = " ".join(encoded_words(name)) + f" <{address}>"
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
        # Already encoded (mailbox, header_text): parsing it again would undo that.
        mime.set_raw(name, _written(name, value))
    mime.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    mime.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return mime


_PLAIN_HEADER = re.compile(r"[\x20-\x7e]*\Z")


def _written(name: str, value: str) -> str:
    """A header value exactly as it goes on the wire: printable ASCII, never re-parsed."""
    if name in TEXT_HEADERS:
        value = header_text(value)
    elif not _PLAIN_HEADER.match(value) or len(name) + len(value) > 996:
        # Addresses are encoded by mailbox(); dates, ids and URLs are ours and ASCII.
        raise ValueError(f"header {name} is not one line of printable ASCII")
    return value


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
        lines.append(f"{name}: {_written(name, value)}\r\n".encode("ascii"))
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

    HTML = import_weasyprint().HTML

    from bulletin.notice import derive_notice

    environment = template_environment(workdir)
    day = today or date.today()
    base = workdir / "templates"
    if not (base / "print.css").is_file():
        base = packaged_templates()
    url = str(base) + "/"
    fetcher = pdf_url_fetcher([workdir, packaged_templates()])
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
            document = HTML(
                string=page_for(letter, subject, version), base_url=url, url_fetcher=fetcher
            ).render()
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
        documents.append(
            HTML(string=page_for(letter, subject, None), base_url=url, url_fetcher=fetcher).render()
        )
        if duplex and len(documents[-1].pages) % 2:
            blank = blank or HTML(string=BLANK_PAGE).render()
            documents.append(blank)
    pages = [page for document in documents for page in document.pages]
    return documents[0].copy(pages).write_pdf()


BLANK_PAGE = "<style>@page { size: A4; margin: 0 }</style>"


def local_resource(url: str, roots: Sequence[Path]) -> str | None:
    """Why a PDF may not fetch `url` (None: it may): only files inside `roots`, and data: URLs.

    WeasyPrint would otherwise request `http://…` images during `preview --format pdf` and
    embed any local file it was pointed at, such as `/some/private.png` (issue 12).
    """
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme == "data":
        return None
    if parts.scheme not in ("file", ""):
        return "a remote resource (only files in the working folder are used)"
    try:
        path = Path(unquote(parts.path)).resolve()
    except (OSError, RuntimeError, ValueError):
        return "an unreadable path"
    if not any(path.is_relative_to(root.resolve()) for root in roots):
        return "a file outside the working folder"
    return None


_IMG_SRC = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)


def image_problems(compiled: CompiledEmail, workdir: Path) -> list[Problem]:
    """Images a PDF would not show: remote ones, or files outside the working folder."""
    from urllib.parse import urljoin

    base = workdir / "templates"
    base = base if (base / "print.css").is_file() else packaged_templates()
    problems = []
    for match in _IMG_SRC.finditer(fill(compiled.body_html, [""] * len(compiled.slots.keys))):
        src = html.unescape(match.group(1) or match.group(2) or "")
        if not src or "\ue000" in src:
            continue
        refused = local_resource(urljoin(base.as_uri() + "/", src), [workdir, packaged_templates()])
        if refused:
            problems.append(
                Problem(
                    compiled.message.shown,
                    None,
                    f"image {src[:80]!r} is {refused}: PDFs (print, preview) leave it out",
                )
            )
    return problems


def pdf_url_fetcher(roots: Sequence[Path]):
    """WeasyPrint's fetcher, refusing whatever `local_resource` refuses."""
    from weasyprint import urls

    def check(url: str) -> None:
        refused = local_resource(url, roots)
        if refused:
            raise ValueError(f"not fetched: {refused}")

    if hasattr(urls, "URLFetcher"):  # WeasyPrint ≥ 68

        class Fetcher(urls.URLFetcher):
            def fetch(self, url, headers=None):
                check(url)
                return super().fetch(url, headers)

        return Fetcher()

    def fetcher(url, *args, **kwargs):  # older releases: a function returning a dict
        check(url)
        return urls.default_url_fetcher(url, *args, **kwargs)

    return fetcher


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


PANGO_HELP = (
    "PDFs need the Pango library, which WeasyPrint could not load ({error}); install it "
    "(Debian/Ubuntu: sudo apt install libpango-1.0-0 libpangoft2-1.0-0; macOS: brew install "
    "pango), then try again"
)


def import_weasyprint():
    """WeasyPrint, or a user error naming what to install when its system libraries are missing."""
    try:
        import weasyprint
    except OSError as error:  # cffi's "cannot load library 'libpango-1.0-0'" (issue 16)
        from bulletin.errors import ConfigError

        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(PANGO_HELP.format(error=first)) from None
    return weasyprint
