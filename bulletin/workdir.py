"""`bulletin init`: a working folder with the packaged layouts; `--example` adds the example.

A real working folder starts with no contacts but an empty list showing the columns: the 36
fictional sample contacts would otherwise go out beside the borough's own list, since the
default audience reads every `contacts/*.csv` (issue 11). `bulletin init --example` copies the
example letter and its sample contacts, to try bulletin out.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from bulletin.errors import InputError

ENV_EXAMPLE = """\
# Copy to .env and fill in. Real environment variables win over this file.
# Without SENDGRID_API_KEY or BULLETIN_TRANSPORT, bulletin writes .eml files to outbox/.

# BULLETIN_TRANSPORT=sendgrid            # sendgrid | smtp | outbox
# SENDGRID_API_KEY=SG.xxxxxxxx
# BULLETIN_SENDGRID_URL=https://api.sendgrid.com
# BULLETIN_OPEN_TRACKING=on               # SendGrid open tracking (on | off)
# BULLETIN_CLICK_TRACKING=off             # SendGrid click tracking; never on our own links
# The sender's name is the organisation and unit, as in the email's header, unless
# BULLETIN_FROM or a message's from: gives one ("Name <address>"): use one name everywhere.
BULLETIN_FROM=bromley.neighbourhoods@example.org
# BULLETIN_PRIVACY_URL=https://www.example.org/privacy   # linked from every email's footer
# BULLETIN_REPLY_TO="Bromley Safer Neighbourhoods <bromley.snt@example.org>"
# BULLETIN_DB=bulletin.db
# BULLETIN_DB_TIMEOUT=10                 # seconds to wait for another process's database lock
# BULLETIN_IN_FLIGHT=4                   # SendGrid requests awaiting an answer at once (1-16)
# BULLETIN_LEASE_SECONDS=60              # a sender silent this long is taken for dead
# BULLETIN_STREAM_ABOVE_MB=12           # contact lists bigger than this are streamed, not held
# BULLETIN_OUTBOX=outbox
# BULLETIN_TIMEOUT=30
# BULLETIN_RETRIES=5                     # retries of a 429 or 5xx answer
# BULLETIN_RETRY_MAX_WAIT=60             # longest wait between them, in seconds

# The identity in every email's header
# BULLETIN_ORGANISATION="Metropolitan Police Service"
# BULLETIN_UNIT="Bromley Borough"

# SMTP_HOST=smtp.example.org            # default localhost
# SMTP_SECURITY=starttls                 # starttls (default) | ssl | none
# SMTP_PORT=587                          # default 587 for starttls, 465 for ssl, 25 for none
# SMTP_USERNAME=
# SMTP_PASSWORD=
# SMTP_CONNECTIONS=3                     # SMTP sessions sending side by side

# Signed unsubscribe links and the webhook receiver (bulletin events serve)
# Make a secret with: python -c "import secrets; print(secrets.token_urlsafe(32))"
# BULLETIN_SECRET=a-long-random-string
# BULLETIN_PUBLIC_URL=https://bulletin.example.org
# SENDGRID_WEBHOOK_PUBLIC_KEY=MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE...

# Printed letters and notices: a reply address (commas become lines) and phone number
# BULLETIN_POSTAL_ADDRESS="Bromley Safer Neighbourhoods, 1 Example Road, Bromley BR1 0XX"
# BULLETIN_PHONE="020 7946 0000"

# Scheduled sends (bulletin run)
# BULLETIN_LOG=bulletin.log
# BULLETIN_STALE_AFTER_HOURS=24

# Sign-off before send (bulletin approve): approvals each version needs, and who may give them
# BULLETIN_APPROVALS=1                   # 0 (the default) turns sign-off off
# BULLETIN_APPROVERS=commander@example.org,deputy@example.org

# Show full tracebacks of errors (for a bug report)
# BULLETIN_DEBUG=1
"""

FOLDERS = ("messages", "contacts", "templates")
EXAMPLE_FOLDERS = ("messages", "contacts")  # copied only with --example
# contacts/contacts.csv in a real working folder: the columns, and no one to send to yet.
CONTACTS_HEADER = "email,first_name,last_name,ward,role,scheme,phone,address,postcode\n"
CONTACTS_FILE = Path("contacts") / "contacts.csv"


def packaged(folder: str) -> Path:
    return Path(str(resources.files("bulletin") / "data" / folder))


def init_workdir(target: Path, *, example: bool = False) -> list[Path]:
    """Copy the packaged layouts (and, with `example`, the example letter and sample contacts)
    into `target`; refuse to overwrite anything."""
    if target.exists() and not target.is_dir():
        raise InputError(
            f"{target}: is a file, not a folder; choose a folder name for bulletin init"
        )
    plan: list[tuple[Path, Path]] = []
    for folder in FOLDERS if example else tuple(f for f in FOLDERS if f not in EXAMPLE_FOLDERS):
        source = packaged(folder)
        for file in sorted(source.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                plan.append((file, target / folder / file.relative_to(source)))
    written_by_us = [target / ".env.example"] + ([] if example else [target / CONTACTS_FILE])
    clashes = [dest for _, dest in plan if dest.exists()]
    clashes += [path for path in written_by_us if path.exists()]
    if clashes:
        names = ", ".join(str(c.relative_to(target)) for c in clashes[:5])
        raise InputError(
            f"{target}: already has {names}; nothing was changed "
            "(move them away or choose another folder)"
        )
    written = []
    try:
        for source, dest in plan:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            written.append(dest)
        (target / "messages").mkdir(parents=True, exist_ok=True)
        if not example:
            (target / CONTACTS_FILE).parent.mkdir(parents=True, exist_ok=True)
            (target / CONTACTS_FILE).write_text(CONTACTS_HEADER, encoding="utf-8")
            written.append(target / CONTACTS_FILE)
        (target / ".env.example").write_text(ENV_EXAMPLE, encoding="utf-8")
    except OSError as error:
        where = error.filename or target
        raise InputError(
            f"{where}: cannot write ({error.strerror or error}); choose another folder"
        ) from None
    written.append(target / ".env.example")
    return written


MARKERS = ("messages", "contacts", ".env", "bulletin.db")


def is_workdir(folder: Path) -> bool:
    """A working folder holds messages/, contacts/, a .env or a tracking database."""
    return any((folder / marker).exists() for marker in MARKERS)


def require_workdir(folder: Path) -> None:
    """Refuse to work in (and create files in) a folder that is not a working folder."""
    if not is_workdir(folder):
        raise InputError(
            f"{folder} is not a bulletin working folder (no messages/, contacts/ or .env); "
            "cd to one, or make one with `bulletin init DIR`"
        )
