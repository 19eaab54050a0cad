"""`bulletin check`: a message, its layouts and its audience's contacts, every problem listed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

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

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def recipients(self) -> list[Contact]:
        return [c for c in self.audience if c.email]

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
) -> Checked:
    """Validate front matter, placeholders, templates and the audience's contacts.

    `load_contacts` (default contacts.load_contacts) lets the live preview reuse lists whose
    files have not changed since the last check. `transport` (default: the configured one)
    decides whether sample addresses are a problem.
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
    if include_contacts:
        files, file_problems = contacts_module.expand(message.contacts, settings.workdir)
        problems += [
            Problem(message.shown, message.line_of("contacts"), p.text) for p in file_problems
        ]
        contact_list = (load_contacts or contacts_module.load_contacts)(files, settings.workdir)
        problems += contact_list.problems
        audience_filter = {field_key(k): v for k, v in message.audience.items()}
        missing = [c for c in audience_filter if files and c not in contact_list.columns]
        for column in missing:
            problems.append(
                Problem(
                    message.shown,
                    message.line_of("audience"),
                    f"audience: no contact list has a column {column!r}",
                )
            )
        problems += _audience_value_problems(message, audience_filter, contact_list, missing)
        audience = [c for c in contact_list.contacts if contacts_module.matches(c, audience_filter)]
        if compiled is not None and files:
            problems += _placeholder_problems(message, compiled, contact_list)
            problems += _subject_field_problems(compiled, audience)
            link_problems = _link_problems(compiled, audience)
        if _delivers_for_real(settings, transport or settings.transport):
            problems += _reserved_domain_problems(
                [c for c in audience if c.email], transport or settings.transport
            )
        if files and not contact_list.problems and not missing and not audience:
            problems.append(
                Problem(
                    message.shown,
                    message.line_of("audience"),
                    "the audience is empty: no contact matches it",
                )
            )
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
    letters = address_problems([c for c in audience if c.postal_only])
    checked = Checked(
        message,
        compiled,
        contact_list,
        audience,
        problems,
        warnings,
        letter_problems=letters,
        link_problems=link_problems,
    )
    if settings.transport == "sendgrid":
        check_transport_limits(checked, settings, "sendgrid")
    return checked


def check_transport_limits(checked: Checked, settings: Settings, transport: str) -> None:
    """What the transport is known to refuse, found before sending (issue 19: SendGrid)."""
    if transport != "sendgrid" or checked.limits_checked == transport:
        return
    checked.limits_checked = transport
    if checked.compiled is None or checked.message.sender is None:
        return
    from bulletin.transports.sendgrid import limit_problems

    problems, warnings = limit_problems(checked.compiled, checked.recipients, settings)
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
    domain = address.rpartition("@")[2].lower().rstrip(".")
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


def _reserved_domain_problems(recipients: list[Contact], transport: str) -> list[Problem]:
    """One problem per contact list holding sample addresses the transport would really mail."""
    by_file: dict[str, list[Contact]] = {}
    for contact in recipients:
        if is_reserved(contact.email):
            by_file.setdefault(str(contact.file), []).append(contact)
    return [
        Problem(
            found[0].file,
            found[0].line,
            f"{len(found)} address(es) on reserved example domains (such as "
            f"{found[0].email.rpartition('@')[2]}) would be sent through {transport}: these "
            "are sample contacts, not real people; take them out of the audience "
            "(bulletin init --example put them there)",
        )
        for found in by_file.values()
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
    contact_list: ContactList,
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
        real: dict[str, str] = {}  # casefolded → as written in the first row that has it
        for contact in contact_list.contacts:
            value = contact.get(column).strip()
            if value:
                real.setdefault(value.casefold(), value)
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


def _subject_field_problems(compiled: CompiledEmail, audience: list[Contact]) -> list[Problem]:
    return [
        Problem(c.file, c.line, f"{key} contains a line break and is used in the subject")
        for c in audience
        for key in compiled.subject_keys
        if has_line_break(c.get(key))
    ]


def _link_problems(compiled: CompiledEmail, audience: list[Contact]) -> list[Problem]:
    """A contact's values that would make a link's final URL a refused scheme (issue 12)."""
    if not compiled.slots.links:
        return []
    return [
        Problem(
            c.file,
            c.line,
            f"a link would become {scrub_text(url)[:60]!r} for this contact: only https, http, "
            "mailto and tel links are allowed (it is left out when sent)",
        )
        for c in audience
        for url in compiled.unsafe_links(c)
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
