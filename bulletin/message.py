"""A message file: YAML front matter, then the Markdown body (DESIGN.md, "A message")."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from email.utils import formataddr, parseaddr
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from bulletin.errors import InputError, Problem
from bulletin.feedback import DEFAULT as DEFAULT_FEEDBACK
from bulletin.feedback import Question, parse_question
from bulletin.fields import has_control, has_line_break
from bulletin.notice import Notice, parse_notice

HEADER_KEYS = ("subject", "from", "reply_to", "category", "reference")

LONDON = ZoneInfo("Europe/London")
KEYS = (
    "subject",
    "from",
    "reply_to",
    "preheader",
    "audience",
    "contacts",
    "send_at",
    "category",
    "reference",
    "notice",
    "feedback",
    "public",
)
DEFAULT_CONTACTS = ("contacts/*.csv",)
_FENCE = re.compile(r"^---[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Address:
    name: str
    email: str

    def __str__(self) -> str:
        return formataddr((self.name, self.email)) if self.name else self.email


@dataclass(frozen=True)
class Message:
    path: Path
    shown: str  # the path as the user sees it, for problems
    name: str
    subject: str
    sender: Address | None
    reply_to: Address | None
    preheader: str
    audience: dict[str, tuple[str, ...]]
    contacts: tuple[str, ...]
    send_at: datetime | None
    category: str
    reference: str
    body: str
    body_line: int  # line number of the body's first line in the file
    content_hash: str
    key_lines: dict[str, int] = field(default_factory=dict)
    notice: Notice | None = None  # the front matter's notice version (bulletin/notice.py)
    feedback: Question | None = DEFAULT_FEEDBACK  # "Was this useful?"; None: `feedback: false`
    public: bool = True  # `public: false`: no public page, no share line (issue 21)

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key)


def resolve_path(name: str, workdir: Path) -> Path:
    """`messages/NAME.md` for a bare NAME, else the path itself (relative to the workdir)."""
    path = Path(name).expanduser()
    # A bare name may contain dots (`bulletin new update-v1.2`): only `.md` marks a file name.
    if path.suffix != ".md" and len(path.parts) == 1:
        path = Path("messages") / f"{name}.md"
    elif len(path.parts) == 1 and not (workdir / path).exists():
        path = Path("messages") / path  # `check NAME.md` means messages/NAME.md (issue 16)
    return path if path.is_absolute() else workdir / path


def parse_address(value: object, key: str) -> tuple[Address | None, str | None]:
    """ "Name <address>" → Address, or an error sentence."""
    if not isinstance(value, str) or not value.strip():
        return None, f'{key} must be text like "Name <name@example.org>"'
    if has_line_break(value):
        return None, f"{key} must be on one line (it reaches an email header)"
    name, address = parseaddr(value)
    if not address or "@" not in address:
        return None, f'{key}: {value!r} has no email address; write "Name <name@example.org>"'
    from email_validator import EmailNotValidError, validate_email

    try:
        valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        address = valid.ascii_email or valid.normalized
    except EmailNotValidError as error:
        return None, f"{key}: {address!r} is not a valid email address: {error}"
    return Address(name.strip(), address), None


def parse_send_at(value: object) -> tuple[datetime | None, str | None]:
    """ISO date-time; naive means Europe/London (DESIGN.md)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None, (
                f"send_at: {value!r} is not an ISO date-time; write e.g. 2016-07-04T07:30"
            )
    else:
        return None, "send_at must be an ISO date-time such as 2016-07-04T07:30"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=LONDON)
    return moment, None


def _has_surrogate(value: object, seen: set[int] | None = None) -> bool:
    """True if a front-matter value holds a lone surrogate; YAML aliases are visited once."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if not isinstance(value, dict | list):
        return False
    seen = set() if seen is None else seen
    if id(value) in seen:
        return False
    seen.add(id(value))
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    return any(_has_surrogate(item, seen) for item in items)


def _key_lines(front: str, first_line: int) -> dict[str, int]:
    lines: dict[str, int] = {}
    try:
        node = yaml.compose(front, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            lines[str(key_node.value)] = first_line + key_node.start_mark.line
    return lines


def load_message(
    path: Path,
    workdir: Path,
    *,
    default_from: str = "",
    default_reply_to: str = "",
    raw: bytes | None = None,
) -> tuple[Message | None, list[Problem]]:
    """Read and validate a message file, listing every problem rather than stopping at one.

    `raw`: the file's bytes as they were (a sent version kept by the ledger, issue 21); then
    the file itself is not read and need not exist.
    """
    try:
        shown = str(path.relative_to(workdir))
    except ValueError:
        shown = str(path)
    if raw is None:
        if not path.is_file():
            from bulletin.names import missing_message

            raise InputError(missing_message(shown, path.stem, workdir))
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{shown}: not UTF-8 text; save the message as UTF-8") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    problems: list[Problem] = []

    def problem(line: int | None, text_: str) -> None:
        problems.append(Problem(shown, line, text_))

    fences = list(_FENCE.finditer(text))
    if not text.startswith("---") or len(fences) < 2 or fences[0].start() != 0:
        problem(
            1, "no front matter: start the file with a line '---', then 'subject: …', then '---'"
        )
        return None, problems
    front = text[fences[0].end() : fences[1].start()]
    body = text[fences[1].end() :].lstrip("\n")
    body_line = text.count("\n", 0, fences[1].end()) + 1
    body_line += len(text[fences[1].end() :]) - len(text[fences[1].end() :].lstrip("\n"))
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError as error:
        # `front` starts on the opening fence's line (after "---"), so YAML's 0-based line
        # N is file line N + 1.
        mark = getattr(error, "problem_mark", None)
        line = 1 + mark.line if mark is not None else 1
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        context = getattr(error, "context", None)
        start = getattr(error, "context_mark", None)
        if context and start is not None and start.line != getattr(mark, "line", None):
            reason += f" ({context} that starts on line {1 + start.line})"
        problem(line, f"front matter is not valid YAML: {reason}")
        return None, problems
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problem(2, "front matter must be 'key: value' lines (subject:, from:, …)")
        return None, problems
    lines = _key_lines(front, 1)
    at = lines.get
    broken = [key for key, value in data.items() if _has_surrogate(key) or _has_surrogate(value)]
    for key in broken:  # YAML's "\ud800" escapes: not characters, and no encoder takes them
        problem(
            at(str(key)), f"{key!r}: an escape such as \\ud800 is not a character; type it instead"
        )
    if broken:
        return None, problems

    for key in data:
        if key not in KEYS:
            problem(
                at(str(key)), f"unknown front matter key {key!r}; known keys: {', '.join(KEYS)}"
            )

    subject = data.get("subject")
    if not isinstance(subject, str) or not subject.strip():
        problem(at("subject", 1), "subject is missing; add 'subject: …' to the front matter")
        subject = ""
    elif has_line_break(subject):
        problem(at("subject"), "subject must be on one line")

    def address_of(key: str, default: str) -> Address | None:
        value = data.get(key, default) if data.get(key) is not None else default
        if not value:
            return None
        address, error = parse_address(value, key)
        if error:
            problem(
                at(key) if key in data else None, error if key in data else f"{error} (from .env)"
            )
        return address

    sender = address_of("from", default_from)
    if sender is None and not any(p.text.startswith("from") for p in problems):
        problem(at("from", 1), "no sender: add 'from: Name <address>' or set BULLETIN_FROM in .env")
    reply_to = address_of("reply_to", default_reply_to)

    preheader = data.get("preheader") or ""
    if not isinstance(preheader, str):
        problem(at("preheader"), "preheader must be text")
        preheader = ""

    audience: dict[str, tuple[str, ...]] = {}
    raw_audience = data.get("audience", {})
    if "audience" in data and not raw_audience:
        # `audience:` left empty must not quietly mean everyone.
        problem(
            at("audience"),
            "audience is empty; list columns and values (e.g. 'ward: [Penge and Cator]'), "
            "or remove 'audience:' to send to everyone",
        )
        raw_audience = {}
    elif not isinstance(raw_audience, dict):
        problem(
            at("audience"),
            "audience must map columns to allowed values, "
            "e.g. 'audience: {ward: [Penge and Cator]}'",
        )
    else:
        for column, allowed in raw_audience.items():
            values = allowed if isinstance(allowed, list) else [allowed]
            if not values or values == [None]:
                problem(at("audience"), f"audience: {column} lists no values; nobody would match")
                continue
            if not all(isinstance(v, str | int) for v in values):
                problem(at("audience"), f"audience: {column} must list allowed values as text")
                continue
            audience[str(column)] = tuple(str(v) for v in values)

    raw_contacts = data.get("contacts") or list(DEFAULT_CONTACTS)
    if isinstance(raw_contacts, str):
        raw_contacts = [raw_contacts]
    if not isinstance(raw_contacts, list) or not all(isinstance(c, str) for c in raw_contacts):
        problem(at("contacts"), "contacts must be a CSV file name or a list of them")
        raw_contacts = list(DEFAULT_CONTACTS)

    send_at = None
    if data.get("send_at") is not None:
        send_at, error = parse_send_at(data["send_at"])
        if error:
            problem(at("send_at"), error)

    category = data.get("category") or ""
    if not isinstance(category, str) or len(category) > 255 or has_line_break(category):
        problem(at("category"), "category must be one line of text, at most 255 characters")
        category = ""
    reference = data.get("reference") or path.stem.upper()
    if not isinstance(reference, str | int) or has_line_break(str(reference)):
        problem(at("reference"), "reference must be one line of text such as BR-2016-07-01")
        reference = path.stem.upper()

    # NUL, ESC, DEL from YAML escapes ("\x1b", "\0") would reach a header (issue 12).
    for key in HEADER_KEYS:
        value = data.get(key)
        if isinstance(value, str) and has_control(value) and not has_line_break(value):
            problem(
                at(key),
                f"{key} contains a control character (such as NUL, ESC or DEL); "
                "it would reach an email header, so remove it",
            )
    notice = None
    if data.get("notice") is not None:
        notice, error = parse_notice(data["notice"])
        if error:
            problem(at("notice"), error)

    feedback, error = parse_question(data.get("feedback"))
    if error:
        problem(at("feedback"), error)
    public = data.get("public", True)
    if not isinstance(public, bool):
        problem(at("public"), "public must be true or false")
        public = True

    message = Message(
        path=path,
        shown=shown,
        name=path.stem,
        subject=subject.strip(),
        sender=sender,
        reply_to=reply_to,
        preheader=preheader.strip(),
        audience=audience,
        contacts=tuple(raw_contacts),
        send_at=send_at,
        category=category.strip(),
        reference=str(reference).strip(),
        body=body,
        body_line=body_line,
        content_hash=hashlib.sha256(raw).hexdigest(),
        key_lines=lines,
        notice=notice,
        feedback=feedback,
        public=public,
    )
    return message, problems


# The scaffold's own placeholder text: `bulletin check` refuses a message that still has it
# (issue 11), so an unedited `bulletin new` can never go out.
SCAFFOLD_PREHEADER = "One line shown in the inbox beside the subject"
SCAFFOLD_BODY = "Write the message here in Markdown."

SCAFFOLD = """\
---
subject: "{title}"
{from_line}
preheader: {preheader}
category: key-messages
reference: {reference}
# audience:
#   ward: [Penge and Cator]
#   role: [coordinator]
# send_at: 2016-07-04T07:30
---
Dear {{{{ first_name or "Co-ordinator" }}}},

{body}

- Key messages as bullets
- Report crime on 999 in an emergency, 101 otherwise

> A quoted statement goes in a block quote.

Many thanks for your continued support.
"""


SCAFFOLD_FROM = "bromley.neighbourhoods@example.org"  # named after BULLETIN_ORGANISATION


def scaffold(name: str, workdir: Path, today: date, *, default_from: str = "") -> Path:
    """Create `messages/NAME.md` from the scaffold; refuse to overwrite.

    Without BULLETIN_FROM the scaffold names a sender itself, so that `bulletin new` then
    `bulletin check` passes in a fresh `bulletin init` folder.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise InputError(f"{name!r}: use letters, digits, '-', '_' or '.' for a message name")
    path = workdir / "messages" / f"{name}.md"
    if path.exists():
        raise InputError(f"messages/{name}.md already exists; edit it or choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    title = title_from_name(name)
    reference = unique_reference(workdir, today)
    from_line = (
        f"# from: {SCAFFOLD_FROM}   (default: BULLETIN_FROM)"
        if default_from
        else f"from: {SCAFFOLD_FROM}   # or set BULLETIN_FROM in .env and delete this line"
    )
    path.write_text(
        SCAFFOLD.format(
            title=title,
            reference=reference,
            from_line=from_line,
            preheader=SCAFFOLD_PREHEADER,
            body=SCAFFOLD_BODY,
        ),
        encoding="utf-8",
    )
    return path


def title_from_name(name: str) -> str:
    """`street-safety-july` → `Street Safety July`: every word capitalised, capitals kept."""
    words = name.replace("-", " ").replace("_", " ").split()
    return " ".join(word[:1].upper() + word[1:] for word in words)


_REFERENCE = re.compile(r"^reference:[ \t]*[\"']?([^\"'\n#]*?)[\"']?[ \t]*(?:#.*)?$", re.MULTILINE)


def unique_reference(workdir: Path, today: date) -> str:
    """`BR-YYYY-MM-DD`, or `BR-YYYY-MM-DD-2`, `-3`… when a message already uses it (issue 16)."""
    used = set()
    for path in (workdir / "messages").glob("*.md"):
        try:
            used.update(_REFERENCE.findall(path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    base = f"BR-{today:%Y-%m-%d}"
    reference, number = base, 1
    while reference in used:
        number += 1
        reference = f"{base}-{number}"
    return reference
