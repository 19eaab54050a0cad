"""Contact lists: CSV files as spreadsheets export them → `Contact`s plus every problem found."""

from __future__ import annotations

import codecs
import csv
import glob
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path
from sys import intern

from bulletin.errors import Problem
from bulletin.fields import ALIASES, field_key, has_line_break

HEADER_FIELDS = ("email", "first_name", "last_name")  # these reach email headers
KNOWN_COLUMNS = (
    "email",
    "first_name",
    "last_name",
    "ward",
    "role",
    "scheme",
    "phone",
    "address",
    "postcode",
)


@dataclass(frozen=True, slots=True, eq=False)
class Contact:
    email: str  # normalised address, "" for a postal-only contact
    fields: Mapping[str, str]  # field_key → value, email included
    file: str
    line: int

    def get(self, key: str) -> str:
        return self.fields.get(key, "")

    @property
    def first_name(self) -> str:
        return self.get("first_name")

    @property
    def last_name(self) -> str:
        return self.get("last_name")

    @property
    def name(self) -> str:
        first, last = self.get("first_name"), self.get("last_name")
        return f"{first} {last}" if first and last else first or last

    @property
    def postal_only(self) -> bool:
        return not self.email

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class ContactList:
    contacts: list[Contact] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # invalid rows: block a send
    duplicates: list[Problem] = field(default_factory=list)  # reported, sent once
    columns: set[str] = field(default_factory=set)
    files: list[Path] = field(default_factory=list)

    @property
    def emailable(self) -> list[Contact]:
        return [c for c in self.contacts if c.email]

    @property
    def postal(self) -> list[Contact]:
        return [c for c in self.contacts if c.postal_only]


def decode(data: bytes) -> tuple[str, str]:
    """Text and encoding of a CSV file: UTF-8 (with or without BOM), else Windows-1252."""
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


# An address whose local part is a plain RFC 5322 dot-atom and whose domain is plain ASCII is
# valid exactly when its domain is, and email-validator would return it with only the domain
# changed; so such addresses cost one email-validator call per domain, not per row (issue 7:
# validation was 60% of a 100,000-row dry run). Anything else takes the full path.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_PLAIN_DOMAIN = re.compile(r"[A-Za-z0-9.-]+\Z")
# RFC 2142 role mailboxes, whose local part email-validator lower-cases: full path.
_ROLE_MAILBOXES = frozenset(
    {
        "info",
        "marketing",
        "sales",
        "support",
        "abuse",
        "noc",
        "security",
        "postmaster",
        "hostmaster",
        "usenet",
        "news",
        "webmaster",
        "www",
        "uucp",
        "ftp",
    }
)


def _validator():
    from email_validator import EmailNotValidError, validate_email

    def full(address: str) -> tuple[str, str | None]:
        try:
            result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError as error:
            return address, str(error)
        # An international domain is kept in its ASCII form (xn--…): every transport, header
        # and suppression hash then sees one spelling (issue 8).
        return result.ascii_email or result.normalized, None

    domains: dict[str, bool] = {}  # plain domain as written → valid and already normalised

    def check(address: str) -> tuple[str, str | None]:
        local, _, domain = address.rpartition("@")
        if (
            len(address) <= 254
            and len(local) <= 64
            and _PLAIN_LOCAL.match(local)
            and (domain in domains or _PLAIN_DOMAIN.match(domain))  # in it: matched before
            and local.lower() not in _ROLE_MAILBOXES
        ):
            plain = domains.get(domain)
            if plain is None:
                normalised, error = full("x@" + domain)
                plain = domains[domain] = error is None and normalised == "x@" + domain.lower()
            if plain:
                return f"{local}@{domain.lower()}", None
        return full(address)

    return check


def check_address(address: str) -> tuple[str, str | None]:
    """An address validated as a contact's is: (normalised address, None) or (as given, why not)."""
    return _validator()(address.strip())


def expand(patterns: Iterable[str], workdir: Path) -> tuple[list[Path], list[Problem]]:
    """Resolve file names and globs (relative to the working folder) to CSV files."""
    files: list[Path] = []
    problems: list[Problem] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        full = path if path.is_absolute() else workdir / path
        if glob.has_magic(str(pattern)):
            matches = sorted(Path(p) for p in glob.glob(str(full)))
            if not matches:
                problems.append(
                    Problem(
                        None,
                        None,
                        f"{pattern}: no contact file matches; "
                        "add a CSV file or run `bulletin init`",
                    )
                )
        elif full.is_file():
            matches = [full]
        else:
            problems.append(Problem(None, None, f"{pattern}: no such contact file"))
            matches = []
        if not path.is_absolute():  # confined to the working folder (issue 12)
            inside = [m for m in matches if m.resolve().is_relative_to(workdir.resolve())]
            if len(inside) < len(matches):
                problems.append(
                    Problem(
                        None,
                        None,
                        f"{pattern}: names files outside the working folder; write an "
                        "absolute path if you mean to use them",
                    )
                )
            matches = inside
        files.extend(m for m in matches if m not in files)
    return files, problems


def display_path(path: Path, workdir: Path) -> str:
    try:
        return str(path.relative_to(workdir))
    except ValueError:
        return str(path)


def load_contacts(files: Iterable[Path], workdir: Path | None = None) -> ContactList:
    """Load every file into one list: duplicates across files are sent once and reported."""
    result = ContactList()
    result.contacts = list(stream_contacts(files, workdir, result))
    return result


def address_digest(key: str) -> bytes:
    """A lower-cased address as 16 bytes: sets of a million addresses held in flat memory. At
    128 bits two addresses never share one in practice, so nobody is taken for somebody else."""
    return blake2b(key.encode(), digest_size=16).digest()


def stream_contacts(
    files: Iterable[Path], workdir: Path | None, result: ContactList
) -> Iterator[Contact]:
    """The contacts of every file, row by row, as `load_contacts` would list them.

    Problems, duplicates, columns and files go into `result` as they are found (complete once
    the stream is exhausted); `result.contacts` is left alone, so a million-row list is read
    without holding it (issue 13). Duplicates are found with one 128-bit digest per address
    (with its row's place), not the address itself: at that width two addresses never share
    one in practice, so nobody is skipped as someone else's duplicate.
    """
    seen: dict[bytes, int] = {}  # digest of the lower-cased address → file number << 32 | line
    shown_names: list[str] = []
    check_address = _validator()
    for path in files:
        shown = display_path(path, workdir) if workdir else str(path)
        result.files.append(path)
        shown_names.append(shown)
        yield from _load_file(path, shown, result, seen, shown_names, check_address)


def _load_file(
    path: Path,
    shown: str,
    result: ContactList,
    seen: dict[bytes, int],
    shown_names: list[str],
    check_address,
) -> Iterator[Contact]:
    try:
        encoding, nul = _encoding_of(path)
        if nul:
            lines = _lines_without_nul(path.read_bytes(), shown, result)
        else:  # read as it is parsed: a million-row file is never whole in memory (issue 13)
            handle = path.open(encoding=encoding, newline="")
    except OSError as error:
        result.problems.append(Problem(shown, None, f"cannot read: {error.strerror}"))
        return
    if nul:
        yield from _load_lines(lines, shown, result, seen, shown_names, check_address)
        return
    with handle:
        yield from _load_lines(handle, shown, result, seen, shown_names, check_address)


def _encoding_of(path: Path) -> tuple[str, bool]:
    """The encoding `decode` would choose for the file, and whether it holds a NUL byte: read
    in pieces, so only one piece is in memory."""
    nul = False
    for encoding in ("utf-8-sig", "cp1252"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with path.open("rb") as handle:
                while piece := handle.read(1 << 20):
                    nul = nul or b"\x00" in piece
                    decoder.decode(piece)
            decoder.decode(b"", True)
        except UnicodeDecodeError:
            continue
        return encoding, nul
    return "latin-1", nul


def _lines_without_nul(data: bytes, shown: str, result: ContactList) -> Iterator[str]:
    """A file holding NUL bytes, whole: each NUL's line reported, the NULs then dropped."""
    text, _encoding = decode(data)
    # Number lines as the csv reader does (\n, \r\n, \r), not str.splitlines (\x0c, \u2028…).
    for number, line in enumerate(_lines(text), 1):
        if "\x00" in line:
            result.problems.append(
                Problem(
                    shown,
                    number,
                    "contains a NUL byte; re-export the file from the spreadsheet as CSV",
                )
            )
    return _lines(text.replace("\x00", ""))


def _load_lines(
    lines: Iterable[str],
    shown: str,
    result: ContactList,
    seen: dict[bytes, int],
    shown_names: list[str],
    check_address,
) -> Iterator[Contact]:
    reader = csv.reader(lines)
    header: list[str] | None = None
    keys: list[str] = []
    previous_end = 0
    file_number = (len(shown_names) - 1) << 32
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            result.problems.append(Problem(shown, previous_end + 1, f"not valid CSV: {error}"))
            previous_end = reader.line_num
            continue
        start, previous_end = previous_end + 1, reader.line_num
        if not "".join(row).strip():
            continue  # blank rows (often trailing) are ignored
        if header is None:
            header = row
            keys = _header_keys(header, shown, start, result)
            if keys is None:
                return
            result.columns.update(k for k in keys if k)
            continue
        contact = _load_row(row, keys, shown, start, result, check_address)
        if contact is None:
            continue
        if contact.email:
            digest = address_digest(contact.email.lower())
            first = seen.get(digest)
            if first is not None:
                where = f"{shown_names[first >> 32]}:{first & 0xFFFFFFFF}"
                result.duplicates.append(
                    Problem(
                        shown,
                        start,
                        f"{contact.email} is also on {where}; it will be sent one copy",
                    )
                )
                continue
            seen[digest] = file_number | start
        yield contact
    if header is None:
        result.problems.append(
            Problem(shown, None, "empty file: the first row must be a header with an email column")
        )


# Lines as io.StringIO(text, newline="") yields them, without its copy of the whole file at
# four bytes a character (issue 7: peak memory of a 100,000-row list).
_LINE = re.compile(r"[^\r\n]*(?:\r\n?|\n)|[^\r\n]+\Z")


def _lines(text: str) -> Iterator[str]:
    return map(re.Match.group, _LINE.finditer(text))


def _header_keys(header: list[str], shown: str, line: int, result: ContactList) -> list[str] | None:
    keys = [field_key(h) if h.strip() else "" for h in header]
    problems = []
    firsts: dict[str, str] = {}
    for raw, key in zip(header, keys, strict=True):
        if not key:
            continue
        if key in firsts:
            problems.append(
                Problem(
                    shown,
                    line,
                    f"columns {firsts[key]!r} and {raw.strip()!r} both mean {key}; keep one",
                )
            )
        firsts.setdefault(key, raw.strip())
    if "email" not in keys and not {"address", "postcode"} <= set(keys):
        spellings = ", ".join(sorted(k for k, v in ALIASES.items() if v == "email"))
        problems.append(
            Problem(
                shown,
                line,
                f"no email column (the header row must name one: "
                f"{spellings}, any case, spaces or '-'/'_' ignored)",
            )
        )
    result.problems.extend(problems)
    return None if problems else keys


def _load_row(
    row: list[str],
    keys: list[str],
    shown: str,
    line: int,
    result: ContactList,
    check_address,
) -> Contact | None:
    """The row's contact, or None with its problem in `result`; duplicates are the caller's."""
    if len(row) > len(keys) and any(cell.strip() for cell in row[len(keys) :]):
        result.problems.append(
            Problem(
                shown,
                line,
                f"{len(row)} fields but the header has {len(keys)}; check for a stray comma",
            )
        )
        return None
    # Interned: a ward, role or first name repeated down a 100,000-row list is stored once
    # (issue 7: a quarter of the peak memory of a big send).
    if "" in keys:
        values = {key: intern(cell.strip()) for key, cell in zip(keys, row, strict=False) if key}
    else:  # the usual header, every column named: the same dict, built in C
        values = dict(zip(keys, map(intern, map(str.strip, row)), strict=False))
    get = values.get
    if has_line_break(get("email", "") + get("first_name", "") + get("last_name", "")):
        key = next(k for k in HEADER_FIELDS if has_line_break(get(k, "")))
        result.problems.append(
            Problem(
                shown,
                line,
                f"{key} contains a line break; names and "
                "addresses reach email headers and must be on one line",
            )
        )
        return None
    email = values.get("email", "")
    if email:
        normalised, error = check_address(email)
        if error:
            result.problems.append(
                Problem(shown, line, f"{email!r} is not a valid email address: {error}")
            )
            return None
        values["email"] = email = normalised
    elif not (values.get("address") and values.get("postcode")):
        result.problems.append(
            Problem(
                shown,
                line,
                "no email address (a postal-only contact needs both address and postcode)",
            )
        )
        return None
    return Contact(email, values, shown, line)  # positional: 100,000 times a send


def matches(contact: Contact, audience: Mapping[str, Iterable[str]]) -> bool:
    """True if the contact is in the audience: every column's value is one of those allowed."""
    for key, allowed in audience.items():
        if contact.get(key).casefold() not in {a.casefold() for a in allowed}:
            return False
    return True


def unknown_columns(conditions: Iterable[str], columns: set[str]) -> list[Problem]:
    """A `--where` column that no list has would silently match nothing: say so instead."""
    known = ", ".join(sorted(columns)) or "none"
    return [
        Problem(None, None, f"--where {name}: no contact list has that column (columns: {known})")
        for name in conditions
        if field_key(name) not in columns
    ]


def where(contacts: Iterable[Contact], conditions: Mapping[str, str]) -> list[Contact]:
    """Contacts whose column contains the text (case-insensitive): a lenient search for lists."""
    folded = {field_key(k): v.casefold() for k, v in conditions.items()}
    return [c for c in contacts if all(v in c.get(k).casefold() for k, v in folded.items())]
