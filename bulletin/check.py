"""`bulletin check`: a message, its layouts and its audience's contacts, every problem listed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from bulletin import contacts as contacts_module
from bulletin.accessibility import accessibility_problems
from bulletin.config import Settings
from bulletin.contacts import Contact, ContactList
from bulletin.errors import InputError, Problem
from bulletin.fields import field_key, has_line_break
from bulletin.message import (
    SCAFFOLD_BODY,
    SCAFFOLD_PREHEADER,
    Address,
    Message,
    load_message,
    resolve_path,
)
from bulletin.publish import public_base
from bulletin.render import (
    CompiledEmail,
    compile_email,
    image_problems,
    sender_identity,
    template_environment,
    template_problem,
)
from bulletin.terminal import scrub_text

ALWAYS_AVAILABLE = {"email"}
# Reserved for examples and tests (RFC 2606, RFC 6761): the sample contacts live here, and no
# real co-ordinator does, so a real transport refuses to mail them (issue 11).
RESERVED_DOMAINS = ("example.org", "example.com", "example.net")
RESERVED_TLDS = ("example", "test", "invalid", "localhost")


@dataclass
class Checked:
    """A message ready to render: compiled once, with its audience resolved."""

    message: Message | None
    compiled: CompiledEmail | None
    contact_list: ContactList
    audience: list[Contact] = field(default_factory=list)  # in the audience, emailable or not
    problems: list[Problem] = field(default_factory=list)
    # Advice that does not stop a send (bulletin/accessibility.py, SendGrid limits); `check`
    # prints it.
    warnings: list[Problem] = field(default_factory=list)
    limits_checked: str = ""  # the transport whose limits `over_limits` reflect (issue 19)
    # Contacts that transport will refuse (also in `warnings`): the send summary lists them.
    over_limits: list[Problem] = field(default_factory=list)
    # Letters `print` would refuse; they fail `check` but do not stop an email send.
    letter_problems: list[Problem] = field(default_factory=list)
    # Links a contact's values would make unsafe: `check` fails on them; `send` leaves such a
    # link out (render.safe_url) rather than stop a whole bulletin for one bad cell (issue 12).
    link_problems: list[Problem] = field(default_factory=list)
    recipient_count: int = 0  # the emailable audience
    postal_count: int = 0
    # Over the emailable audience's lower-cased addresses, in order: a send that reads the
    # lists again (streamed) checks it finds the same people.
    audience_digest: str = ""
    # Streamed (`check_message(stream=True)`): reads the emailable audience again, from the
    # files; `audience` is then left empty and a million-row list is never held (issue 13).
    source: Callable[[], Iterator[Contact]] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def streamed(self) -> bool:
        return self.source is not None

    def iter_recipients(self) -> Iterator[Contact]:
        """The emailable audience, in order: from memory, or read again when streamed."""
        if self.source is not None:
            return self.source()
        return (c for c in self.audience if c.email)

    @property
    def recipients(self) -> list[Contact]:
        """The emailable audience as a list (streamed: read into memory; small uses only)."""
        return list(self.iter_recipients())

    @property
    def postal(self) -> list[Contact]:
        return [c for c in self.audience if c.postal_only]

    def raise_for_problems(self, what: str = "nothing was sent") -> None:
        if self.problems:
            raise InputError(f"{len(self.problems)} problem(s) found; {what}", self.problems)


def check_message(
    name: str,
    settings: Settings,
    *,
    include_contacts: bool = True,
    load_contacts: Callable[..., ContactList] | None = None,
    transport: str | None = None,
    stream: bool = False,
) -> Checked:
    """Validate front matter, placeholders, templates and the audience's contacts.

    `load_contacts` (default contacts.load_contacts) lets the live preview reuse lists whose
    files have not changed since the last check. `transport` (default: the configured one)
    decides whether sample addresses are a problem. `stream`: lists bigger than
    BULLETIN_STREAM_ABOVE_MB are read row by row, keeping counts and problems, not the
    contacts (`bulletin send`, `bulletin run`: issue 13).
    """
    path = resolve_path(name, settings.workdir)
    message, problems = load_message(
        path, settings.workdir, default_from=settings.sender, default_reply_to=settings.reply_to
    )
    if message is None:
        return Checked(None, None, ContactList(), problems=problems)
    identity = sender_identity(settings.organisation, settings.unit)
    if message.sender is not None and not message.sender.name and identity:
        # One name everywhere: a From without a name shows the masthead's (issue 15, item 9).
        message = replace(message, sender=Address(identity, message.sender.email))
    compiled, render_problems = compile_email(
        message,
        settings.workdir,
        organisation=settings.organisation,
        unit=settings.unit,
        privacy_url=settings.privacy_url,
        share_base=public_base(settings),
    )
    problems += _scaffold_problems(message) + render_problems + _print_layout_problems(settings)
    contact_list = ContactList()
    audience: list[Contact] = []
    link_problems: list[Problem] = []
    letters: list[Problem] = []
    counted = _Counted()
    source = None
    limits: tuple[list[Problem], list[Problem]] | None = None
    if include_contacts:
        files, file_problems = contacts_module.expand(message.contacts, settings.workdir)
        problems += [
            Problem(message.shown, message.line_of("contacts"), p.text) for p in file_problems
        ]
        audience_filter = {field_key(k): v for k, v in message.audience.items()}
        reserved_transport = (
            transport or settings.transport
            if _delivers_for_real(settings, transport or settings.transport)
            else None
        )
        stream = stream and _megabytes(files) > settings.stream_above_mb
        if stream:
            contacts = contacts_module.stream_contacts(files, settings.workdir, contact_list)
        else:
            contact_list = (load_contacts or contacts_module.load_contacts)(files, settings.workdir)
            contacts = iter(contact_list.contacts)
        emailable = _audience_pass(
            contacts,
            audience_filter,
            compiled if files else None,
            reserved_transport,
            counted,
            None if stream else audience,
        )
        if _checks_limits(settings.transport, compiled, message):
            from bulletin.transports.sendgrid import limit_problems

            limits = limit_problems(compiled, emailable, settings)
        else:
            for _ in emailable:
                pass
        problems += contact_list.problems
        missing = [c for c in audience_filter if files and c not in contact_list.columns]
        for column in missing:
            problems.append(
                Problem(
                    message.shown,
                    message.line_of("audience"),
                    f"audience: no contact list has a column {column!r}",
                )
            )
        problems += _audience_value_problems(message, audience_filter, counted.values, missing)
        if compiled is not None and files:
            problems += _placeholder_problems(message, compiled, contact_list)
            problems += counted.subject_problems
            link_problems = counted.link_problems
        if reserved_transport is not None:
            problems += _reserved_domain_problems(counted.reserved, reserved_transport)
        if files and not contact_list.problems and not missing and not counted.members:
            problems.append(
                Problem(
                    message.shown,
                    message.line_of("audience"),
                    "the audience is empty: no contact matches it",
                )
            )
        letters = counted.letter_problems
        if stream:
            workdir = settings.workdir

            def source() -> Iterator[Contact]:
                again = contacts_module.stream_contacts(files, workdir, ContactList())
                return (c for c in again if c.email and contacts_module.matches(c, audience_filter))

    problems += _public_fallback_problems(message, compiled, contact_list)
    if compiled is not None:
        link_problems += image_problems(compiled, settings.workdir)
    warnings = accessibility_problems(message.body, message.shown, message.body_line)
    if message.sender is not None and identity and message.sender.name != identity:
        warnings.append(
            Problem(
                message.shown,
                message.line_of("from"),
                f"the sender's name {message.sender.name!r} is not the email header's "
                f"{identity!r}; recipients check the name, so use one: give only the address "
                "(or set BULLETIN_ORGANISATION / BULLETIN_UNIT)",
            )
        )
    checked = Checked(
        message,
        compiled,
        contact_list,
        audience,
        problems,
        warnings,
        letter_problems=letters,
        link_problems=link_problems,
        recipient_count=counted.recipients,
        postal_count=counted.postal,
        audience_digest=counted.digest.hexdigest(),
        source=source,
    )
    if limits is not None:
        checked.limits_checked = "sendgrid"
        checked.problems += limits[0]
        checked.warnings += limits[1]
        checked.over_limits += limits[1]
    elif settings.transport == "sendgrid":
        check_transport_limits(checked, settings, "sendgrid")
    return checked


def _megabytes(files: list[Path]) -> float:
    """The contact files' size together (a file that cannot be read counts as empty)."""
    total = 0
    for path in files:
        with suppress(OSError):
            total += path.stat().st_size
    return total / 2**20


def _checks_limits(transport: str, compiled: CompiledEmail | None, message: Message) -> bool:
    """Are SendGrid's limits checked as the audience is read (`check_transport_limits`)?"""
    return transport == "sendgrid" and compiled is not None and message.sender is not None


@dataclass
class _Counted:
    """What one pass over the contacts found, kept without keeping the contacts (issue 13)."""

    members: int = 0  # in the audience, emailable or not
    recipients: int = 0
    postal: int = 0
    digest: Any = field(default_factory=lambda: hashlib.blake2b(digest_size=16))
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # audience column's values
    subject_problems: list[Problem] = field(default_factory=list)
    link_problems: list[Problem] = field(default_factory=list)
    letter_problems: list[Problem] = field(default_factory=list)
    # File → (its first reserved-domain contact, how many): `_reserved_domain_problems`.
    reserved: dict[str, tuple[Contact, int]] = field(default_factory=dict)


def _audience_pass(
    contacts: Iterator[Contact],
    audience_filter: dict[str, tuple[str, ...]],
    compiled: CompiledEmail | None,
    reserved_transport: str | None,
    counted: _Counted,
    keep: list[Contact] | None,
) -> Iterator[Contact]:
    """Check each contact as it is read; yield the emailable audience (for SendGrid's limits).

    Counts, the audience's digest (the send reads the lists again and must find the same
    people: `Checked.audience_digest`) and every per-contact problem go into `counted`; the
    contacts themselves only into `keep`, when given.
    """
    from bulletin.address import fit_contact

    values = counted.values
    for column in audience_filter:
        values[column] = {}
    subject_keys = compiled.subject_keys if compiled is not None else ()
    links = compiled is not None and bool(compiled.slots.links)
    update = counted.digest.update
    for contact in contacts:
        for column, real in values.items():  # every contact's, in the audience or not
            value = contact.get(column).strip()
            if value:
                real.setdefault(value.casefold(), value)
        if not contacts_module.matches(contact, audience_filter):
            continue
        counted.members += 1
        if keep is not None:
            keep.append(contact)
        for key in subject_keys:
            if has_line_break(contact.get(key)):
                counted.subject_problems.append(
                    Problem(
                        contact.file,
                        contact.line,
                        f"{key} contains a line break and is used in the subject",
                    )
                )
        if links:
            counted.link_problems += _link_problems(compiled, contact)
        if contact.email:
            counted.recipients += 1
            update(contact.email.lower().encode() + b"\n")
            if reserved_transport is not None and is_reserved(contact.email):
                first, count = counted.reserved.get(contact.file, (contact, 0))
                counted.reserved[contact.file] = (first, count + 1)
            yield contact
        else:
            counted.postal += 1
            fit = fit_contact(contact)
            if not fit.ok:
                counted.letter_problems.append(
                    Problem(contact.file, contact.line, f"letter refused: {fit.problem}")
                )


def check_transport_limits(checked: Checked, settings: Settings, transport: str) -> None:
    """What the transport is known to refuse, found before sending (issue 19: SendGrid)."""
    if transport != "sendgrid" or checked.limits_checked == transport:
        return
    checked.limits_checked = transport
    if checked.compiled is None or checked.message.sender is None:
        return
    from bulletin.transports.sendgrid import limit_problems

    problems, warnings = limit_problems(checked.compiled, checked.iter_recipients(), settings)
    checked.problems += problems
    checked.warnings += warnings
    checked.over_limits += warnings


def address_problems(contacts: list[Contact]) -> list[Problem]:
    """Postal contacts whose address cannot be printed in the envelope window, FILE:LINE."""
    from bulletin.address import fit_contact

    problems = []
    for contact in contacts:
        fit = fit_contact(contact)
        if not fit.ok:
            problems.append(Problem(contact.file, contact.line, f"letter refused: {fit.problem}"))
    return problems


def is_reserved(address: str) -> bool:
    """Is the address on a domain reserved for examples (example.org, *.test, …)?"""
    return _reserved_domain(address.rpartition("@")[2])


@lru_cache(maxsize=4096)  # a list's domains repeat: asked once per contact of a big list
def _reserved_domain(domain: str) -> bool:
    domain = domain.lower().rstrip(".")
    return domain.rpartition(".")[2] in RESERVED_TLDS or any(
        domain == d or domain.endswith("." + d) for d in RESERVED_DOMAINS
    )


def _delivers_for_real(settings: Settings, transport: str) -> bool:
    """sendgrid or smtp to anything but a loopback address (the test suite's stand-ins).

    An unconfigured transport is left to `send` to refuse, with the setting to fix.
    """
    import ipaddress
    from urllib.parse import urlsplit

    if transport == "sendgrid" and settings.sendgrid_api_key:
        host = urlsplit(settings.sendgrid_url).hostname
    elif transport == "smtp" and settings.smtp_host:
        host = settings.smtp_host
    else:
        return False
    try:
        return not ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return True  # a name, even localhost: a local relay delivers for real


def _reserved_domain_problems(
    by_file: dict[str, tuple[Contact, int]], transport: str
) -> list[Problem]:
    """One problem per contact list holding sample addresses the transport would really mail."""
    return [
        Problem(
            first.file,
            first.line,
            f"{count} address(es) on reserved example domains (such as "
            f"{first.email.rpartition('@')[2]}) would be sent through {transport}: these "
            "are sample contacts, not real people; take them out of the audience "
            "(bulletin init --example put them there)",
        )
        for first, count in by_file.values()
    ]


def _scaffold_problems(message: Message) -> list[Problem]:
    """An empty body, or text `bulletin new` put there and nobody replaced (issue 11)."""
    problems = []
    if not message.body.strip():
        problems.append(
            Problem(
                message.shown,
                message.body_line,
                "the body is empty: write the message below the front matter's closing ---",
            )
        )
    for number, line in enumerate(message.body.splitlines(), message.body_line):
        if SCAFFOLD_BODY in line:
            problems.append(
                Problem(
                    message.shown,
                    number,
                    f"the body still has the scaffold's text {SCAFFOLD_BODY!r}: write the message",
                )
            )
    if message.preheader.strip() == SCAFFOLD_PREHEADER:
        problems.append(
            Problem(
                message.shown,
                message.line_of("preheader"),
                "preheader is still the scaffold's text: write the line an inbox shows beside "
                "the subject, or remove it",
            )
        )
    return problems


def _audience_value_problems(
    message: Message,
    audience: dict[str, tuple[str, ...]],
    values: dict[str, dict[str, str]],
    missing: list[str],
) -> list[Problem]:
    """Every audience value that matches no contact, with the nearest real values (issue 11).

    A misspelt ward would otherwise drop everyone in it without a word.
    """
    import difflib

    problems = []
    for column, allowed in audience.items():
        if column in missing:
            continue
        real = values[column]  # casefolded → as written in the first row that has it
        for value in allowed:
            if value.strip().casefold() in real:
                continue
            near = difflib.get_close_matches(value.casefold(), list(real), n=3, cutoff=0.6)
            if near:
                hint = "did you mean " + " or ".join(repr(real[n]) for n in near) + "?"
            elif real:
                shown = sorted(real.values())
                hint = "values: " + ", ".join(map(repr, shown[:10])) + (" …" if shown[10:] else "")
            else:
                hint = "the column is empty in every row"
            problems.append(
                Problem(
                    message.shown,
                    message.line_of("audience"),
                    f"audience: {column}: no contact has {value!r} ({hint})",
                )
            )
    return problems


def _print_layout_problems(settings: Settings) -> list[Problem]:
    """print.html is only rendered by `print`; parse it here so check finds its mistakes too."""
    import jinja2

    try:
        template_environment(settings.workdir).get_template("print.html")
    except jinja2.TemplateError as error:
        return [template_problem(error, settings.workdir)]
    return []


def _placeholder_problems(
    message: Message, compiled: CompiledEmail, contact_list: ContactList
) -> list[Problem]:
    known = contact_list.columns | ALWAYS_AVAILABLE
    problems = []
    reported: set[str] = set()
    for placeholder in compiled.placeholders:
        if placeholder.key not in known and placeholder.key not in reported:
            reported.add(placeholder.key)
            columns = ", ".join(sorted(known))
            problems.append(
                Problem(
                    message.shown,
                    placeholder.line,
                    f"{{{{ {placeholder.name} }}}}: no contact column "
                    f"{placeholder.name!r} (columns: {columns})",
                )
            )
    return problems


def _public_fallback_problems(
    message: Message, compiled: CompiledEmail | None, contact_list: ContactList
) -> list[Problem]:
    """A public message's page is for nobody in particular: each placeholder needs a fallback.

    A placeholder naming no column is reported once, as that (`_placeholder_problems`).
    """
    if compiled is None or not message.public:
        return []
    known = contact_list.columns | ALWAYS_AVAILABLE if contact_list.columns else None
    problems, reported = [], set()
    for placeholder in compiled.placeholders:
        if known is not None and placeholder.key not in known:
            continue
        if not placeholder.fallback and placeholder.key not in reported:
            reported.add(placeholder.key)
            problems.append(
                Problem(
                    message.shown,
                    placeholder.line,
                    f"{{{{ {placeholder.name} }}}} has no fallback, and the message's public "
                    f'page shows nobody\'s details: write {{{{ {placeholder.name} or "…" }}}}, '
                    "or add 'public: false' to the front matter",
                )
            )
    return problems


def _link_problems(compiled: CompiledEmail, contact: Contact) -> list[Problem]:
    """A contact's values that would make a link's final URL a refused scheme (issue 12)."""
    return [
        Problem(
            contact.file,
            contact.line,
            f"a link would become {scrub_text(url)[:60]!r} for this contact: only https, http, "
            "mailto and tel links are allowed (it is left out when sent)",
        )
        for url in compiled.unsafe_links(contact)
    ]


def find_contact(checked: Checked, email: str | None) -> Contact | None:
    """The contact to preview as: by address, else the first in the audience."""
    pool = checked.audience or checked.contact_list.contacts
    if email is None:
        return pool[0] if pool else None
    wanted = email.strip().lower()
    for contact in checked.contact_list.contacts:
        if contact.email.lower() == wanted:
            return contact
    files = ", ".join(f.name for f in checked.contact_list.files) or "the contact lists"
    raise InputError(f"--contact {email}: no such address in {files}")
