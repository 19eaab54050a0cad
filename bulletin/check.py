"""`bulletin check`: a message, its layouts and its audience's contacts, every problem listed."""

from __future__ import annotations

from dataclasses import dataclass, field

from bulletin import contacts as contacts_module
from bulletin.config import Settings
from bulletin.contacts import Contact, ContactList
from bulletin.errors import InputError, Problem
from bulletin.fields import field_key, has_line_break
from bulletin.message import Message, load_message, resolve_path
from bulletin.render import (
    CompiledEmail,
    compile_email,
    image_problems,
    template_environment,
    template_problem,
)
from bulletin.terminal import scrub_text

ALWAYS_AVAILABLE = {"email"}


@dataclass
class Checked:
    """A message ready to render: compiled once, with its audience resolved."""

    message: Message | None
    compiled: CompiledEmail | None
    contact_list: ContactList
    audience: list[Contact] = field(default_factory=list)  # in the audience, emailable or not
    problems: list[Problem] = field(default_factory=list)
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


def check_message(name: str, settings: Settings, *, include_contacts: bool = True) -> Checked:
    """Validate front matter, placeholders, templates and the audience's contacts."""
    path = resolve_path(name, settings.workdir)
    message, problems = load_message(
        path, settings.workdir, default_from=settings.sender, default_reply_to=settings.reply_to
    )
    if message is None:
        return Checked(None, None, ContactList(), problems=problems)
    compiled, render_problems = compile_email(
        message, settings.workdir, organisation=settings.organisation, unit=settings.unit
    )
    problems += render_problems + _print_layout_problems(settings)
    contact_list = ContactList()
    audience: list[Contact] = []
    link_problems: list[Problem] = []
    if include_contacts:
        files, file_problems = contacts_module.expand(message.contacts, settings.workdir)
        problems += [
            Problem(message.shown, message.line_of("contacts"), p.text) for p in file_problems
        ]
        contact_list = contacts_module.load_contacts(files, settings.workdir)
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
        audience = [c for c in contact_list.contacts if contacts_module.matches(c, audience_filter)]
        if compiled is not None and files:
            problems += _placeholder_problems(message, compiled, contact_list)
            problems += _subject_field_problems(compiled, audience)
            link_problems = _link_problems(compiled, audience)
        if files and not contact_list.problems and not missing and not audience:
            problems.append(
                Problem(
                    message.shown,
                    message.line_of("audience"),
                    "the audience is empty: no contact matches it",
                )
            )
    if compiled is not None:
        link_problems += image_problems(compiled, settings.workdir)
    return Checked(message, compiled, contact_list, audience, problems, link_problems)


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
