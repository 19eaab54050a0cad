"""The command line: parse options, call one library function, print the result.

This is the only module that imports typer, prints, or picks exit codes (STYLE.md).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from bulletin import __version__
from bulletin.errors import BulletinError, ExitCode, InputError

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="Send the Borough Commander's key messages to Neighbourhood Watch co-ordinators, "
    "and track every copy.",
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"bulletin {__version__}")
        raise typer.Exit()


def _help_if_bare(ctx: typer.Context) -> None:
    """A bare `bulletin` (or `bulletin contacts`) prints its help on stdout and exits 0."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="show the version and exit"
        ),
    ] = False,
) -> None:
    _help_if_bare(ctx)


def group(help: str) -> typer.Typer:
    """A command group whose bare name prints its help."""
    sub = typer.Typer(help=help, short_help=help, rich_markup_mode=None)
    sub.callback(invoke_without_command=True)(_help_if_bare)
    return sub


contacts_app = group("Validate and list contact lists.")
app.add_typer(contacts_app, name="contacts")


def _plain_metavar(param: Any) -> None:
    """`FILES...` and `--output FILE` in help, never Python types such as `<list[str]>`."""
    if getattr(param, "_plain", False):
        return
    param._plain = True
    if param.param_type_name == "argument":
        name = (param.metavar or param.name or "").strip("[]").upper()
        shown = name + ("..." if param.nargs != 1 else "")
        param.metavar = name
        param.display_type_rich = lambda ctx: None
        param._usage_display_name = lambda: shown if param.required else f"[{shown}]"
    elif not param.is_flag and param.metavar is None:
        descriptor = getattr(param, "type_descriptor", None)
        choices = getattr(descriptor, "choices", None) if descriptor else None
        param.metavar = (
            f"[{'|'.join(str(getattr(c, 'value', c)) for c in choices)}]"
            if choices
            else (param.name or "value").upper()
        )


class Command(TyperCommand):
    """Help text without Python types (issue 16)."""

    def get_params(self, ctx: Any) -> list:
        params = super().get_params(ctx)
        for param in params:
            _plain_metavar(param)
        return params


def fail(line: str, code: ExitCode = ExitCode.INVALID) -> typer.Exit:
    typer.echo(f"Error: {line}", err=True)
    return typer.Exit(int(code))


def command(group: typer.Typer, name: str | None = None, **options: Any) -> Callable:
    """Register a command whose `BulletinError`s become one line per problem and an exit code."""

    def register(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _warned.clear()
            try:
                return function(*args, **kwargs)
            except BulletinError as error:
                if os.environ.get("BULLETIN_DEBUG"):
                    raise
                lines = error.lines()
                for line in lines[:-1]:
                    typer.echo(line, err=True)
                raise fail(lines[-1] if lines else "failed", error.exit_code) from None

        doc = (function.__doc__ or "").strip()
        options.setdefault("short_help", doc.split("\n\n")[0].replace("\n", " "))
        options.setdefault("cls", Command)
        return group.command(name, **options)(wrapper)

    return register


_warned: set[str] = set()  # settings warnings already printed by this command


def settings():
    """The working folder's settings (refusing a folder that is not one); a warning for each
    unknown BULLETIN_*/SMTP_*/SENDGRID_* key, once."""
    from bulletin.config import load_settings
    from bulletin.workdir import require_workdir

    require_workdir(Path.cwd())
    config = load_settings()
    for warning in config.warnings:
        if warning not in _warned:
            _warned.add(warning)
            note(warning)
    return config


def tracker_for(config):
    from bulletin.tracking import Tracker

    return Tracker(config.db_url, timeout=config.db_timeout, secret=config.secret)


def echo(text: str = "") -> None:
    typer.echo(text)


def note(text: str) -> None:
    typer.echo(text, err=True)


def table(columns, rows) -> None:
    """Print a table fitted to the terminal (COLUMNS if set): cells wrap, none is cut."""
    from bulletin.tables import output_width, render_table

    echo(render_table(columns, rows, output_width(isatty=sys.stdout.isatty())))


MessageArg = Annotated[
    str, typer.Argument(help="messages/NAME.md, or just NAME", show_default=False)
]


# --- set-up --------------------------------------------------------------------------------


@command(app)
def init(
    directory: Annotated[Path, typer.Argument(help="folder to set up")] = Path("."),
    example: Annotated[
        bool,
        typer.Option(
            "--example", help="also copy the example letter and its 36 fictional sample contacts"
        ),
    ] = False,
) -> None:
    """Make a working folder: messages/, contacts/, templates/ and .env.example.

    contacts/ starts with an empty contacts.csv (the columns only); --example adds the example
    letter and sample contacts instead, to try bulletin out.

    Example: bulletin init borough-bulletins
    """
    from bulletin.workdir import init_workdir

    written = init_workdir(directory.resolve(), example=example)
    echo(
        f"Set up {directory}: {len(written)} files (messages/, contacts/, templates/, "
        ".env.example)."
    )
    if example:
        echo(
            "Next: bulletin check eu-referendum, then bulletin preview eu-referendum --format html"
        )
    else:
        echo(
            "Next: put your contact list in contacts/ (contacts/contacts.csv shows the columns), "
            "then bulletin new NAME"
        )


@command(app)
def new(name: Annotated[str, typer.Argument(help="name of the new message")]) -> None:
    """Scaffold messages/NAME.md with front matter and a Markdown body.

    Example: bulletin new street-safety-july
    """
    from bulletin.message import scaffold

    config = settings()
    path = scaffold(name, config.workdir, date.today(), default_from=config.sender)
    echo(
        f"Created {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}; "
        f"edit it, then run: bulletin check {name}"
    )


# --- checking ------------------------------------------------------------------------------


@command(app)
def check(message: MessageArg) -> None:
    """Validate a message: front matter, placeholders, templates and its audience's contacts.

    Example: bulletin check eu-referendum
    """
    from bulletin.check import check_message

    checked = check_message(message, settings())
    for duplicate in checked.contact_list.duplicates:
        note(str(duplicate))
    checked.problems.extend(checked.letter_problems)  # letters print would refuse fail check
    checked.problems.extend(checked.link_problems)
    checked.raise_for_problems("fix them and run bulletin check again")
    for warning in checked.warnings:  # advice, once the errors are fixed; never blocks a send
        note(f"warning: {warning}")
    recipients, postal = len(checked.recipients), len(checked.postal)
    echo(
        f"{checked.message.shown}: OK — {recipients} email recipient(s)"
        + (f", {postal} postal-only" if postal else "")
        + (
            f", {len(checked.contact_list.duplicates)} duplicate row(s) skipped"
            if checked.contact_list.duplicates
            else ""
        )
        + (f", {len(checked.warnings)} warning(s)" if checked.warnings else "")
    )


def _load_contact_files(files: list[str] | None):
    from bulletin import contacts

    workdir = settings().workdir
    found, problems = contacts.expand(files or ["contacts/*.csv"], workdir)
    if problems and not found:
        raise InputError("", problems)
    loaded = contacts.load_contacts(found, workdir)
    loaded.problems[:0] = problems
    return loaded


FilesArg = Annotated[
    list[str] | None,
    typer.Argument(help="CSV files or globs (default: contacts/*.csv)", show_default=False),
]


@command(contacts_app, "check")
def contacts_check(files: FilesArg = None) -> None:
    """Validate contact lists; every problem as FILE:LINE: what is wrong.

    Example: bulletin contacts check contacts/coordinators.csv
    """
    loaded = _load_contact_files(files)
    for duplicate in loaded.duplicates:
        note(str(duplicate))
    if loaded.problems:
        raise InputError(
            f"{len(loaded.problems)} invalid row(s) in {len(loaded.files)} file(s)", loaded.problems
        )
    echo(
        f"{len(loaded.contacts)} contacts OK in {len(loaded.files)} file(s)"
        f" ({len(loaded.emailable)} with email, {len(loaded.postal)} postal-only"
        + (f", {len(loaded.duplicates)} duplicates skipped" if loaded.duplicates else "")
        + ")"
    )


@command(contacts_app, "list")
def contacts_list(
    files: FilesArg = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            metavar="COLUMN=TEXT",
            help="rows whose column contains the text (any case); repeatable",
        ),
    ] = None,
) -> None:
    """List contacts as a table.

    Example: bulletin contacts list --where ward=Penge
    """
    from bulletin import contacts
    from bulletin.tables import Column

    conditions = {}
    for condition in where or []:
        column, sep, value = condition.partition("=")
        if not sep or not column.strip():
            raise typer.BadParameter(f"{condition!r}: write COLUMN=TEXT", param_hint="--where")
        conditions[column.strip()] = value.strip()
    loaded = _load_contact_files(files)
    for problem in loaded.problems:
        note(str(problem))
    if unknown := contacts.unknown_columns(conditions, loaded.columns):
        raise InputError("", unknown)
    shown = contacts.where(loaded.contacts, conditions)
    columns = [
        Column("email"),
        Column("name", 1),
        Column("ward", 2),
        Column("role", 3),
        Column("source", 4),
        Column("scheme", 5),
    ]
    rows = [
        [c.email or "(postal)", c.name, c.get("ward"), c.get("role"), c.where, c.get("scheme")]
        for c in shown
    ]
    table(columns, rows)
    echo(f"{len(shown)} of {len(loaded.contacts)} contacts")


# --- rendering -----------------------------------------------------------------------------


class Format(StrEnum):
    html = "html"
    text = "text"
    pdf = "pdf"
    eml = "eml"


def _checked_for_rendering(message: str):
    from bulletin.check import check_message

    checked = check_message(message, settings())
    if checked.compiled is None:
        checked.raise_for_problems("nothing was rendered")
    for problem in checked.problems:
        note(f"warning: {problem}")
    return checked


def _write_output(data: bytes, output: Path | None, open_it: bool, suffix: str) -> None:
    from bulletin.outputs import STDOUT, is_stdout, write_output

    if output is None and open_it:
        import tempfile

        handle, name = tempfile.mkstemp(prefix="bulletin-preview-", suffix=suffix)
        os.close(handle)
        output = Path(name)
    if output is None or is_stdout(output):
        if suffix == ".pdf" and sys.stdout.isatty():
            raise InputError("a PDF cannot be shown in the terminal; add -o preview.pdf or --open")
        write_output(STDOUT, data)
        return
    write_output(output, data)
    echo(f"Wrote {output} ({len(data):,} bytes)")
    if open_it:
        typer.launch(str(output))


@command(app)
def preview(
    message: MessageArg,
    format: Annotated[Format, typer.Option("--format", "-f", help="what to render")] = Format.html,
    contact: Annotated[
        str | None,
        typer.Option(metavar="EMAIL", help="render for this address (default: the first contact)"),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="write here (default: stdout)", dir_okay=False, metavar="FILE"
        ),
    ] = None,
    open_it: Annotated[bool, typer.Option("--open", help="open the result")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="a live page on 127.0.0.1 that follows your edits")
    ] = False,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="with --serve: port (default: a free one)")
    ] = 0,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="with --serve: do not open a browser")
    ] = False,
) -> None:
    """Render a message for one contact as HTML, text, PDF or the full .eml; no credentials needed.

    Example: bulletin preview eu-referendum --format pdf -o eu-referendum.pdf

    With --serve: one live page (email at desktop and phone width, text, PDFs, a contact
    picker, check's problems) that updates as you save. Example: bulletin preview NAME --serve
    """
    if serve:
        from bulletin.web import preview as live

        live.serve(message, settings().workdir, port=port, open_browser=not no_open, say=echo)
        return
    from bulletin import preview as previews

    checked = _checked_for_rendering(message)
    data, suffix = previews.render_preview(checked, settings(), format.value, contact)
    _write_output(data, output, open_it, suffix)


@command(app, "print")
def print_letters(
    message: MessageArg,
    notice: Annotated[
        bool, typer.Option("--notice", help="one A4 notice for a notice board")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            dir_okay=False,
            metavar="FILE",
            help="PDF file, or - for stdout (default: NAME-letters.pdf)",
        ),
    ] = None,
    duplex: Annotated[
        bool,
        typer.Option("--duplex", help="a blank back page after each letter with an odd page count"),
    ] = False,
) -> None:
    """One PDF of letters for the audience's postal-only contacts, or a one-page A4 notice.

    Example: bulletin print eu-referendum --notice -o notice.pdf
    """
    from bulletin import preview as previews
    from bulletin.outputs import is_stdout, write_output

    checked = _checked_for_rendering(message)
    printed = previews.render_print(checked, settings(), notice=notice, duplex=duplex)
    kind = "notice" if notice else "letters"
    path = output or Path(f"{checked.message.name}-{kind}.pdf")
    if printed.pdf:
        if is_stdout(path) and sys.stdout.isatty():
            raise InputError("a PDF cannot be shown in the terminal; add -o FILE")
        write_output(path, printed.pdf)
        if not is_stdout(path):
            echo(
                f"Wrote {path}: "
                + ("an A4 notice" if notice else f"{printed.count} letter(s)")
                + f" ({len(printed.pdf):,} bytes)"
            )
    if printed.refused:
        raise InputError(
            f"{len(printed.refused)} letter(s) not printed: the address does not fit",
            printed.refused,
        )


# --- sending -------------------------------------------------------------------------------


def _summary_lines(plan) -> list[str]:
    message = plan.checked.message
    lines = [
        f"Message:   {message.shown} (reference {message.reference})",
        f"Subject:   {message.subject}",
        f"From:      {message.sender}",
        f"Transport: {plan.transport.describe()}",
        f"Audience:  {plan.recipient_count} email recipient(s)"
        + (
            f"; {plan.postal_only} postal-only not emailed (use bulletin print)"
            if plan.postal_only
            else ""
        ),
    ]
    skipped = [f"{plan.suppressed} suppressed", f"{plan.duplicates} duplicate row(s)"]
    if plan.invalid_skipped:
        skipped.append(f"{len(plan.invalid_skipped)} invalid row(s)")
    lines.append("Skipped:   " + ", ".join(skipped))
    refused = plan.checked.over_limits if plan.checked.limits_checked == plan.transport.name else []
    if refused:  # issue 19: known before sending, refused when sending
        lines += [f"warning: {w}" for w in refused]
        lines.append(f"Refused:   {len(refused)} over the transport's limits")
    if plan.resume is not None:
        lines.append(_resume_line(plan))
    elif plan.limit is not None and plan.to_send < plan.due:
        lines.append(f"Limit:     {plan.to_send} now (--limit), {plan.due - plan.to_send} later")
    from bulletin.approval import summary_line

    if approved := summary_line(plan.approval, plan.checked.recipient_count):
        lines.append(approved)  # the audience at approval beside the audience now (issue 17)
    lines.append(f"To send:   {plan.to_send} recipient(s)")
    return lines


def _resume_line(plan) -> str:
    """What a resumed send does, per recipient (issue 11); ends with the number to be sent."""
    if plan.unknown:
        unknown = f"{plan.unknown} unknown " + (
            "(re-sent: --resend-unknown)"
            if plan.resend_unknown
            else "(not re-sent without --resend-unknown)"
        )
    else:
        unknown = "0 unknown"
    line = (
        f"Resuming:  send #{plan.resume.id} — {plan.already_done} already done, "
        f"{plan.to_send} to go; {plan.joined} joined since, {unknown}, "
        f"{plan.suppressed} suppressed"
    )
    if plan.left:
        line += f", {plan.left} left the list (not sent)"
    if plan.to_send < plan.due:
        line += f"; {plan.due - plan.to_send} more after this --limit"
    return line


def _progress(total: int):
    """A rich progress bar on a terminal; otherwise a plain line every tenth."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("Sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("emails"),
            TimeRemainingColumn(),
            transient=True,
            console=Console(stderr=True),
        )
        task = progress.add_task("send", total=total)
        return progress, lambda n: progress.advance(task, n)
    done = [0, 0]

    def log(n: int) -> None:
        done[0] += n
        step = max(1, total // 10)
        if done[0] // step > done[1] or done[0] >= total:
            done[1] = done[0] // step
            note(f"sent {done[0]}/{total} emails")

    from contextlib import nullcontext

    return nullcontext(), log


@command(app)
def send(
    message: MessageArg,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="render everything, send nothing")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    transport: Annotated[
        str | None, typer.Option(metavar="NAME", help="sendgrid, smtp or outbox")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="send to the next N pending only")
    ] = None,
    skip_invalid: Annotated[
        bool, typer.Option(help="send to the valid rows, report the rest")
    ] = False,
    resend_unknown: Annotated[
        bool, typer.Option(help="re-send recipients whose earlier attempt has an unknown outcome")
    ] = False,
    new_send: Annotated[
        bool, typer.Option(help="start a new send of a changed message (everyone gets it again)")
    ] = False,
    test: Annotated[
        str | None,
        typer.Option(
            metavar="EMAIL",
            help="send one copy, personalised as the first contact, to this staff address",
        ),
    ] = None,
) -> None:
    """Send a message to its audience; resumable, never sends anyone the same send twice.

    Running it again for the same (unchanged) message resumes that send against the list as it
    is now: people who joined since get their copy, people who left and were not sent yet are
    not sent, suppressed people are skipped, and nobody already sent is sent again. The summary
    says how many joined, are already done, unknown and suppressed; the number asked about
    ("Send to N recipient(s)?") is exactly the number then sent.

    Example: bulletin send eu-referendum --dry-run
    """
    from bulletin import send as sending
    from bulletin.check import check_message

    if test and dry_run:
        raise typer.BadParameter(
            "--dry-run sends nothing; use one or the other", param_hint="--test"
        )
    config = settings()
    # Streamed (issue 13): the contacts are read row by row here, and again as they are queued.
    checked = check_message(message, config, transport=transport, stream=True)
    for duplicate in checked.contact_list.duplicates:
        note(str(duplicate))
    # The lock comes first (issue 11): a second send refuses before it reads or touches any row,
    # and the count confirmed below cannot change before it is sent.
    lock = (
        nullcontext()
        if dry_run or test or checked.message is None
        else sending.send_lock(
            config.db_url, checked.message.name, lease_seconds=config.lease_seconds
        )
    )
    with lock as held:
        plan = sending.plan_send(
            checked,
            config,
            transport_name=transport,
            skip_invalid=skip_invalid,
            new_send=new_send,
            limit=limit,
            resend_unknown=resend_unknown,
        )
        if not test:  # a test copy to staff needs no sign-off (issue 17)
            plan.approval = _signed_off(checked, config, message, dry_run)
        for problem in plan.invalid_skipped:
            note(f"skipped: {problem}")
        for line in _summary_lines(plan):
            note(line)
        if test:
            message_id = sending.send_test(plan, config, test)
            if plan.transport.name == "outbox":
                from bulletin.transports.outbox import eml_name

                echo(
                    f"Test copy for {test} written to "
                    f"{plan.transport.folder / eml_name('test', 0)}; nothing was emailed (the "
                    "outbox transport only writes .eml files). Set SENDGRID_API_KEY, or "
                    "BULLETIN_TRANSPORT=smtp, in .env to email it."
                )
                return
            echo(
                f"Test copy sent to {test} via {plan.transport.name}"
                + (f" (message id {message_id})" if message_id else "")
                + "; not tracked."
            )
            return
        if dry_run:
            report = sending.dry_run(plan, config)
            echo(
                f"Dry run: rendered {report.attempted} message(s); nothing was sent. "
                f"Run without --dry-run to send."
            )
            return
        from bulletin import delivery

        if plan.to_send == 0 and plan.resume is not None:
            # Nothing is sent, but people who left or were suppressed are settled in the ledger.
            _report_send(delivery.deliver(plan, config, held, new_send=new_send), checked)
            return
        if not yes:
            if not sys.stdin.isatty():
                raise InputError("no terminal to confirm on; pass --yes to send without asking")
            try:
                confirmed = typer.confirm(f"Send to {plan.to_send} recipient(s)?", err=True)
            except typer.Abort:  # Ctrl-C or end of input at the prompt
                note("")
                raise fail(
                    "interrupted at the prompt; nothing was sent", ExitCode.INTERRUPTED
                ) from None
            if not confirmed:
                raise fail("cancelled; nothing was sent")
        bar, advance = _progress(plan.to_send)
        try:
            with bar:
                outcome = delivery.deliver(plan, config, held, new_send=new_send, progress=advance)
        except sending.Unsent as error:
            raise fail(
                f"{error} — nothing more was sent; recorded state is in {config.db}",
                ExitCode.TRANSPORT,
            ) from None
    _report_send(outcome, checked)


def _signed_off(checked, config, message: str, dry_run: bool):
    """The version's approvals; without enough, one line and exit 1 (a dry run only warns)."""
    from bulletin import approval

    try:
        return approval.for_send(checked, config, message)
    except approval.Unapproved as unapproved:
        if not dry_run:
            raise
        note(f"warning: {unapproved}")
        return unapproved.standing


def _report_send(outcome, checked) -> None:
    """Print what `delivery.deliver` says happened; exit with its code."""
    from bulletin.errors import Interrupted, PartialSendError

    report, name = outcome.report, checked.message.name
    for line in outcome.details:
        note(line)
    echo(outcome.summary)
    if outcome.nothing_to_send:
        if outcome.exit_code == ExitCode.PARTIAL:
            raise PartialSendError(
                f"send #{report.send_id} finished with {outcome.unknown_in_send} recipient(s) "
                f"unknown; see `bulletin status {report.send_id}`"
            )
        return
    if outcome.transport == "outbox" and report.accepted:
        echo("Nothing was emailed: the outbox transport only writes .eml files.")
    if outcome.exit_code == ExitCode.INTERRUPTED:
        raise Interrupted(
            f"interrupted; the state is recorded. Run `bulletin send {name}` again to resume."
        )
    if outcome.exit_code == ExitCode.PARTIAL:
        raise PartialSendError(
            f"some recipients failed or are unknown; see `bulletin status {report.send_id}`"
        )
    if report.pending_left and not report.completed:
        echo(
            f"{report.pending_left} recipient(s) still pending: run `bulletin send {name}` "
            "again to continue."
        )


@command(app)
def status(
    send_ref: Annotated[
        str | None, typer.Argument(metavar="[SEND]", help="send number or message name")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            dir_okay=False,
            metavar="FILE",
            help="write one CSV row per recipient to FILE, or - for stdout",
        ),
    ] = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", dir_okay=False, hidden=True, help="same as -o")
    ] = None,
) -> None:
    """Show sends and what happened to each recipient.

    Example: bulletin status eu-referendum -o deliveries.csv
    """
    import json

    from bulletin import status as statuses
    from bulletin.outputs import is_stdout
    from bulletin.tracking import Tracker

    if output is not None and csv_path is not None:
        raise typer.BadParameter("give -o FILE once (--csv is its old spelling)", param_hint="-o")
    output = output or csv_path
    if as_json and is_stdout(output):
        raise typer.BadParameter("--json and -o - both write to stdout; choose one")
    config = settings()
    if not config.db_exists:
        raise InputError(f"no tracking database at {config.db}; nothing has been sent yet")
    with Tracker(config.db_url, timeout=config.db_timeout) as tracker:
        sends = [statuses.find_send(tracker, send_ref)] if send_ref else tracker.sends()
        summaries = [statuses.summary(tracker, s) for s in sends]
        if output is not None:
            rows = statuses.write_csv(tracker, sends, output)
            if not is_stdout(output):  # with --json, stdout holds only the JSON
                (note if as_json else echo)(f"Wrote {output}: {rows} recipient row(s)")
    if as_json:
        echo(json.dumps({"sends": summaries}, indent=2))
    elif output is not None:
        return
    elif send_ref:
        _print_send(summaries[0], statuses)
    else:
        _print_sends(summaries)


def _print_sends(summaries: list[dict]) -> None:
    from bulletin.ledger.states import State
    from bulletin.tables import Column, local_time

    columns = [
        Column("send", 0, numeric=True),
        Column("message", 0),
        Column("created", 0),
        Column("recipients", 0, numeric=True),
        Column(State.DELIVERED, 1, numeric=True),
        Column(State.FAILED, 1, numeric=True),
        Column(State.UNKNOWN, 1, numeric=True),
        Column(State.PENDING, 2, numeric=True),
        Column(State.ACCEPTED, 3, numeric=True),
        Column(State.BOUNCED, 3, numeric=True),
        Column("subject", 4),
    ]
    rows = []
    for s in summaries:
        c = s["counts"]
        rows.append(
            [
                str(s["id"]),
                s["message"],
                local_time(s["created_at"]),
                str(s["recipients"]),
                str(c[State.DELIVERED]),
                str(c[State.FAILED]),
                str(c[State.UNKNOWN]),
                str(c[State.PENDING]),
                str(c[State.ACCEPTED]),
                str(c[State.BOUNCED]),
                s["subject"],
            ]
        )
    if not summaries:
        echo("No sends yet.")
        return
    table(columns, rows)

    from bulletin.approval import record_lines

    for s in summaries:  # who approved each send (issue 17)
        if s.get("approval"):
            echo(f"#{s['id']}: " + "; ".join(record_lines(s["approval"])))


def _print_send(s: dict, statuses) -> None:
    from bulletin.tables import local_time

    echo(f"Send #{s['id']}: {s['message']} — {s['subject']}")
    echo(
        f"Created {local_time(s['created_at'])} via {s['transport']}; "
        + (f"completed {local_time(s['completed_at'])}" if s["completed_at"] else "not completed")
    )
    echo(statuses.tracking_line(s["tracking"]))
    echo(statuses.feedback_line(s["feedback"]))
    for sender in s.get("senders", ()):
        echo(
            f"Sending now: {sender['host']} (pid {sender['pid']}), lease until "
            f"{local_time(sender['lease_until'])}"
            if sender["live"]
            else f"Stopped sending: {sender['host']} (pid {sender['pid']}); its recipients in "
            "flight become unknown when the send next runs"
        )
    from bulletin.approval import record_lines

    for line in record_lines(s.get("approval")):
        echo(line)
    rates = statuses.rates(s["counts"])
    for state in statuses.DISPLAY_ORDER:
        count = s["counts"].get(state, 0)
        if count or state in statuses.ALWAYS_SHOWN:
            rate = f"  {rates[state]:6.1%}" if state in rates else ""
            echo(f"  {state:<13}{count:>8}{rate}")
    echo(f"  {'recipients':<13}{s['recipients']:>8}")
    if rates:
        basis = statuses.rates_basis(s["counts"])
        echo(f"  (rates are shares of the {basis} recipient(s) handed to the transport)")


# --- sign-off before send (issue 17) --------------------------------------------------------


@command(app)
def approve(
    message: MessageArg,
    request: Annotated[
        str | None,
        typer.Option(
            "--request", metavar="EMAIL", help="email this approver a link to the approval page"
        ),
    ] = None,
    as_: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar='"NAME <EMAIL>"',
            help="record the approval of an approver sitting beside you",
        ),
    ] = None,
) -> None:
    """Ask an approver to approve this version of a message, or record their approval here.

    The approver gets the bulletin as recipients will see it, its audience, what changed since
    the last approved version, and a signed link to the approval page of bulletin events serve.

    Example: bulletin approve eu-referendum --request commander@example.org
    """
    from bulletin import approval
    from bulletin.check import check_message

    if (request is None) == (as_ is None):
        raise typer.BadParameter('give one of --request EMAIL or --as "NAME <EMAIL>"')
    config = settings()
    checked = check_message(message, config)
    if request is not None:
        asked = approval.request(checked, config, request)
        echo(
            f"Asked {asked.event.who} to approve {checked.message.shown} "
            f"(version {asked.event.fingerprint[:12]}, {asked.event.audience} recipient(s)) "
            f"via {asked.transport}; the link works until {approval._when(asked.event.expires_at)}."
        )
        if asked.transport == "outbox":
            echo("Nothing was emailed: the outbox transport only writes .eml files.")
        return
    event = approval.approve_in_person(checked, config, as_ or "")
    echo(
        f"Recorded: {checked.message.shown} (version {event.fingerprint[:12]}) approved by "
        f"{event.who}, {event.route}."
    )
    _approval_standing(checked, config, message)


def _approval_standing(checked, config, message: str) -> None:
    from bulletin import approval

    if not config.approvals:
        return
    try:
        approval.for_send(checked, config, message)
        echo(f"It has the {config.approvals} approval(s) BULLETIN_APPROVALS asks for.")
    except approval.Unapproved as unapproved:
        echo(f"Not yet sendable: {unapproved}")


@command(app)
def history(message: MessageArg) -> None:
    """List a message's versions, approval requests, approvals, asks for changes and sends.

    Example: bulletin history eu-referendum
    """
    from bulletin import approval
    from bulletin.tracking import Tracker

    config = settings()
    name = Path(message).stem
    if not config.db_exists:
        raise InputError(f"no tracking database at {config.db}; nothing has been recorded yet")
    with Tracker(config.db_url, timeout=config.db_timeout) as tracker:
        lines = approval.history(tracker, name)
    for line in lines:
        echo(str(line) if line.what.startswith("version ") else f"  {line}")
    if not lines:
        echo(f"Nothing recorded for {name} yet.")


# --- suppressions --------------------------------------------------------------------------

suppress_app = group("The do-not-send list.")
app.add_typer(suppress_app, name="suppress")


@command(suppress_app, "add")
def suppress_add(
    emails: Annotated[list[str], typer.Argument(help="addresses to stop sending to")],
    reason: Annotated[str, typer.Option(metavar="TEXT", help="why (shown in the list)")] = "manual",
) -> None:
    """Add addresses to the do-not-send list; every later send skips them.

    Example: bulletin suppress add someone@example.org --reason "asked by phone"
    """
    from bulletin.contacts import check_address

    # Validated as contacts are, all before any is added (issue 11).
    for email in emails:
        if (error := check_address(email)[1]) is not None:
            raise InputError(f"{email!r} is not an email address ({error}); nothing was added")
    with tracker_for(settings()) as tracker:
        for email in emails:
            added = tracker.suppress(email.strip(), reason, "manual")
            echo(f"{email}: " + ("suppressed" if added else "already suppressed"))


@command(suppress_app, "remove")
def suppress_remove(emails: Annotated[list[str], typer.Argument(help="addresses")]) -> None:
    """Take addresses off the do-not-send list.

    Example: bulletin suppress remove someone@example.org
    """

    with tracker_for(settings()) as tracker:
        for email in emails:
            removed = tracker.unsuppress(email)
            echo(f"{email}: " + ("removed" if removed else "was not on the list"))


@command(suppress_app, "list")
def suppress_list() -> None:
    """List the do-not-send list with reasons and dates.

    Example: bulletin suppress list
    """
    from bulletin.tables import Column, local_time
    from bulletin.terminal import scrub_text

    with tracker_for(settings()) as tracker:
        rows = tracker.suppressions()
    if rows:
        columns = [Column("email"), Column("reason", 1), Column("added", 2), Column("source", 3)]
        table(
            columns,
            [
                [  # reasons come from bounces and webhook posts: no terminal escapes
                    scrub_text(row["email"] or "(forgotten)"),
                    scrub_text(row["reason"]),
                    local_time(row["created_at"]),
                    scrub_text(row["source"]),
                ]
                for row in rows
            ],
        )
    echo(f"{len(rows)} suppressed address(es)")


# --- scheduled sends (issue 6) -------------------------------------------------------------


@command(app)
def run(
    messages: Annotated[
        Path, typer.Option(file_okay=False, metavar="DIR", help="folder of messages to look at")
    ] = Path("messages"),
    now: Annotated[
        str | None,
        typer.Option(metavar="ISO", help="act as if it were this time (naive: Europe/London time)"),
    ] = None,
    stale_after: Annotated[
        float | None,
        typer.Option(
            min=0,
            metavar="HOURS",
            help="hours after send_at a never-sent message counts as stale "
            "(default: BULLETIN_STALE_AFTER_HOURS or 24)",
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="say what was considered and why")
    ] = False,
) -> None:
    """For cron: send every message whose send_at is due and not yet sent; quiet if nothing is.

    An unfinished send is resumed (people who joined the list since included). A finished send
    is never extended: people who join the list later are not mailed by run; `bulletin send
    NAME` sends them their copy.

    Example: bulletin run --verbose
    """
    from bulletin import run as runs

    try:
        moment = runs.parse_now(now) if now else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--now") from None
    result = runs.run_due(settings(), messages=messages, now=moment, stale_after_hours=stale_after)
    for problem, line in result.lines(verbose):
        (note if problem else echo)(line)
    if result.exit_code:
        raise typer.Exit(int(result.exit_code))


# --- delivery events and reports (issue 5) ---------------------------------------------------

events_app = group("SendGrid delivery events: receive them, or load a downloaded file.")
app.add_typer(events_app, name="events")


@command(events_app, "serve")
def events_serve(
    host: Annotated[
        str, typer.Option(help="address to listen on (a reverse proxy exposes it)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8025,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="accept unsigned event posts (local tests only)")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="worker processes sharing the port and database")
    ] = 1,
) -> None:
    """Receive SendGrid's Event Webhook at POST /events and serve the /unsubscribe pages.

    Example: bulletin events serve --port 8025 --workers 2
    """
    from bulletin.web import webhook

    webhook.serve(settings(), host, port, insecure=insecure, workers=workers, log=note)


@command(events_app, "import")
def events_import(
    file: Annotated[
        Path, typer.Argument(help="a JSON array, or one event per line (.gz too)", dir_okay=False)
    ],
) -> None:
    """Load SendGrid events from a downloaded file; safe to run again on the same file.

    Example: bulletin events import sendgrid-events.json
    """
    from bulletin import events

    def progress(tally: events.Tally) -> None:
        if sys.stderr.isatty():
            typer.echo(f"\r{tally.received:,} event(s) so far…", err=True, nl=False)

    with tracker_for(settings()) as tracker:
        tally = events.import_events(tracker, file, progress=progress)
    if sys.stderr.isatty():
        note("")
    echo(f"{file}: {events.describe(tally)}")
    if tally.malformed:
        more = tally.malformed - len(tally.problems)
        raise InputError(
            f"{tally.malformed} malformed item(s) in {file} were skipped"
            + (f" ({more} more not listed)" if more else "")
            + "; everything else was imported",
            tally.problems,
        )


@command(app)
def report(
    send_ref: Annotated[str, typer.Argument(metavar="SEND", help="send number or message name")],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            dir_okay=False,
            metavar="FILE",
            help="HTML file, or - for stdout (default: NAME-report.html)",
        ),
    ] = None,
) -> None:
    """Write a self-contained HTML report of a send: rates, a chart over time, bounces, wards.

    Example: bulletin report eu-referendum -o report.html
    """
    from bulletin import report as reports
    from bulletin import status as statuses
    from bulletin.tracking import Tracker

    config = settings()
    if not config.db_exists:
        raise InputError(f"no tracking database at {config.db}; nothing has been sent yet")
    with Tracker(config.db_url, timeout=config.db_timeout) as tracker:
        send = statuses.find_send(tracker, send_ref)
        page = reports.render_report(tracker, send, config)
    from bulletin.outputs import is_stdout, write_output

    path = output or Path(f"{send.message}-report.html")
    write_output(path, page.encode("utf-8"))
    if is_stdout(path):
        return
    echo(f"Wrote {path} ({len(page.encode()):,} bytes): send #{send.id}, {send.subject}")


@command(app)
def feedback(
    send_ref: Annotated[str, typer.Argument(metavar="SEND", help="send number or message name")],
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", dir_okay=False, help="write one row per answer (a 0600 file)"),
    ] = None,
) -> None:
    """Show what recipients answered to "Was this useful?", and their comments, newest first.

    Example: bulletin feedback eu-referendum --csv feedback.csv
    """
    from bulletin import feedback_export
    from bulletin import status as statuses
    from bulletin.feedback import ANSWER_WORDS, terminal_text
    from bulletin.tracking import Tracker

    config = settings()
    if not config.db_exists:
        raise InputError(f"no tracking database at {config.db}; nothing has been sent yet")
    with Tracker(config.db_url, timeout=config.db_timeout) as tracker:
        send = statuses.find_send(tracker, send_ref)
        summary = feedback_export.summarise(tracker, send)
        if csv_path is not None:
            rows = feedback_export.write_csv(tracker, send, csv_path)
            note(f"Wrote {csv_path}: {rows} answer row(s)")
            return
    echo(f"Send #{send.id}: {send.message} — {send.subject}")
    for line in feedback_export.describe(summary):
        echo(line)
    for answer in summary.comments:
        who = answer.email or "(forgotten)"
        echo(f"\n{answer.commented_at} · {ANSWER_WORDS[answer.answer]} · {who}")
        echo(f"    {terminal_text(answer.comment)}")


# --- public pages (issue 21) ----------------------------------------------------------------


@command(app)
def publish(
    message: MessageArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", file_okay=False, help="also write index.html and notice.pdf here"
        ),
    ] = None,
) -> None:
    """Publish the non-personal page of a sent message (again, if withdrawn), at /m/REFERENCE.

    Every send of a public message publishes its page already; this puts a withdrawn one back,
    or with -o writes it as static files for your own website.
    Example: bulletin publish eu-referendum -o site/BR-2016-07-01
    """
    from bulletin import publish as publishing

    config = settings()
    published = publishing.publish(config, message)
    echo(f"Published {published.publication.reference}: {published.url}")
    if output is not None:
        for path in publishing.write_static(config, published, output):
            echo(f"Wrote {path} ({path.stat().st_size:,} bytes)")


@command(app)
def unpublish(
    reference: Annotated[str, typer.Argument(help="the message's reference, e.g. BR-2016-07-01")],
) -> None:
    """Withdraw a public page: it then answers 410, saying the message was withdrawn.

    Example: bulletin unpublish BR-2016-07-01
    """
    from bulletin import publish as publishing

    withdrawn = publishing.unpublish(settings(), reference)
    echo(
        f"Withdrew {withdrawn.reference} (message {withdrawn.message}); "
        f"`bulletin publish {withdrawn.message}` puts it back"
    )


# --- data protection (issue 8) -------------------------------------------------------------


@command(app)
def forget(
    email: Annotated[str, typer.Argument(help="the address to erase", show_default=False)],
) -> None:
    """Erase a person from the tracking database and outbox; a hash keeps them unmailed.

    Example: bulletin forget ada.okafor@example.org
    """
    from bulletin import privacy

    result = privacy.forget(settings(), email)
    for line in privacy.describe_forgotten(result):
        echo(line)
    for row in result.contact_rows:
        echo(f"{row.file}:{row.line}: still lists {result.email}; delete this row yourself")
    if not result.contact_rows:
        echo("No contact list names them any more.")


@command(app)
def purge(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="purge sends older than this: 400d, 8w or 2y",
            show_default=False,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would go; change nothing")
    ] = False,
) -> None:
    """Delete the per-recipient details of old sends; their totals stay in bulletin status.

    Example: bulletin purge --older-than 400d
    """
    from bulletin import privacy

    try:
        age = privacy.parse_age(older_than)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--older-than") from None
    echo(privacy.describe_purged(privacy.purge(settings(), age, dry_run=dry_run), dry_run))


def main() -> None:
    """Console-script entry point."""
    app()


# --- the tracking database (issue 13) --------------------------------------------------------

db_app = group("The tracking database: upgrade it, or copy it to another back end.")
app.add_typer(db_app, name="db")


@command(db_app, "upgrade")
def db_upgrade() -> None:
    """Bring the tracking database (BULLETIN_DB) to this bulletin's schema; safe to repeat.

    A SQLite file upgrades itself on first use; a PostgreSQL database shared by several
    machines is upgraded once, with this command, after installing a new bulletin.

    Example: bulletin db upgrade
    """
    from bulletin.ledger import migrate
    from bulletin.ledger.engine import describe, make_engine

    config = settings()
    engine = make_engine(config.db_url, timeout=config.db_timeout)
    try:
        before = migrate.current_revision(engine)
        after = migrate.upgrade(engine)
        where = describe(engine)
    finally:
        engine.dispose()
    if before == after:
        echo(f"{where} is up to date (schema {after}).")
    else:
        echo(f"Upgraded {where} from schema {before or 'none'} to {after}.")


@command(db_app, "copy")
def db_copy(
    source: Annotated[str, typer.Argument(help="a SQLite file or a postgresql:// URL")],
    target: Annotated[str, typer.Argument(help="a SQLite file or a postgresql:// URL")],
    force: Annotated[
        bool, typer.Option("--force", help="replace a target that already holds a history")
    ] = False,
) -> None:
    """Copy a whole tracking history to another database (SQLite to PostgreSQL, or back).

    Both are brought to this bulletin's schema first. Stop every bulletin using them while
    copying. The target must be empty unless --force.

    Example: bulletin db copy bulletin.db postgresql://bulletin@db.example.org/bulletin
    """
    from bulletin.ledger import migrate
    from bulletin.ledger.copy import copy_database
    from bulletin.ledger.engine import describe, is_postgres_url, make_engine

    config = settings()
    if not is_postgres_url(source) and not config.resolve(source).is_file():
        raise InputError(f"{source}: no such tracking database; check the path")
    engines = [
        make_engine(db if is_postgres_url(db) else config.resolve(db), timeout=config.db_timeout)
        for db in (source, target)
    ]
    try:
        for engine in engines:
            migrate.upgrade(engine)
        result = copy_database(*engines, force=force)
        names = [describe(e) for e in engines]
    finally:
        for engine in engines:
            engine.dispose()
    echo(
        f"Copied {result.total:,} row(s) from {names[0]} to {names[1]}: "
        + ", ".join(f"{n:,} {table}" for table, n in result.rows.items())
        + "."
    )
