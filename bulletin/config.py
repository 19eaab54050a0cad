"""The one place that reads configuration: `.env` (python-dotenv), real environment first."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bulletin.errors import ConfigError

TRANSPORTS = ("sendgrid", "smtp", "outbox")
SMTP_SECURITY = ("starttls", "ssl", "none")

# Every setting bulletin reads, in one place: any other BULLETIN_*, SMTP_* or SENDGRID_* key is
# a typo until proven otherwise, and gets a warning naming the nearest of these (issue 11).
SETTINGS_KEYS = (
    "BULLETIN_TRANSPORT",
    "BULLETIN_SENDGRID_URL",
    "BULLETIN_FROM",
    "BULLETIN_REPLY_TO",
    "BULLETIN_DB",
    "BULLETIN_OUTBOX",
    "BULLETIN_TIMEOUT",
    "BULLETIN_SECRET",
    "BULLETIN_PUBLIC_URL",
    "BULLETIN_ORGANISATION",
    "BULLETIN_UNIT",
    "BULLETIN_LOG",
    "BULLETIN_STALE_AFTER_HOURS",
    "BULLETIN_RETRIES",
    "BULLETIN_RETRY_MAX_WAIT",
    "BULLETIN_DB_TIMEOUT",
    "BULLETIN_IN_FLIGHT",
    "BULLETIN_LEASE_SECONDS",
    "BULLETIN_STREAM_ABOVE_MB",
    "BULLETIN_OPEN_TRACKING",
    "BULLETIN_CLICK_TRACKING",
    "BULLETIN_PRIVACY_URL",
    "BULLETIN_POSTAL_ADDRESS",
    "BULLETIN_PHONE",
    "BULLETIN_APPROVALS",
    "BULLETIN_APPROVERS",
    "BULLETIN_DEBUG",  # read by cli.py: tracebacks for developers
    "SENDGRID_API_KEY",
    "SENDGRID_WEBHOOK_PUBLIC_KEY",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_SECURITY",
    "SMTP_CONNECTIONS",
)
# Read by the test suite's fixtures (the browser and PostgreSQL), not by bulletin itself.
TEST_SUITE_KEYS = ("BULLETIN_CHROMIUM", "BULLETIN_PG_BIN")
SETTINGS_PREFIXES = ("BULLETIN_", "SMTP_", "SENDGRID_")
# Numeric settings: (kind, default, lowest, highest). Out of range is refused, not clamped.
NUMBERS: dict[str, tuple[type, float, float, float]] = {
    "SMTP_PORT": (int, 0, 1, 65535),  # default depends on SMTP_SECURITY
    "SMTP_CONNECTIONS": (int, 3, 1, 32),
    "BULLETIN_TIMEOUT": (float, 30.0, 0.001, 3600),
    "BULLETIN_STALE_AFTER_HOURS": (float, 24.0, 0, 24 * 366),
    "BULLETIN_RETRIES": (int, 5, 0, 100),
    "BULLETIN_RETRY_MAX_WAIT": (float, 60.0, 0, 3600),
    "BULLETIN_DB_TIMEOUT": (float, 10.0, 0.001, 3600),
    "BULLETIN_IN_FLIGHT": (int, 4, 1, 16),  # SendGrid requests at once (issue 13)
    "BULLETIN_LEASE_SECONDS": (float, 60.0, 1, 3600),  # a silent sender is dead after this
    # Contact lists bigger than this are read row by row, twice, not held (issue 13).
    "BULLETIN_STREAM_ABOVE_MB": (float, 12.0, 0, 1_000_000),
    "BULLETIN_APPROVALS": (int, 0, 0, 20),  # sign-off before send (issue 17); 0: off
}


@dataclass(frozen=True)
class Settings:
    workdir: Path
    transport: str = "outbox"
    sendgrid_api_key: str = field(default="", repr=False)
    sendgrid_url: str = "https://api.sendgrid.com"
    sender: str = ""
    reply_to: str = ""
    db: str = "bulletin.db"
    outbox: Path = Path("outbox")
    smtp_host: str = "localhost"
    smtp_port: int = 0
    smtp_username: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_security: str = "starttls"
    smtp_connections: int = 3
    secret: str = field(default="", repr=False)
    public_url: str = ""
    webhook_public_key: str = field(default="", repr=False)
    timeout: float = 30.0
    organisation: str = "Metropolitan Police Service"
    unit: str = "Bromley Borough"
    postal_address: str = ""  # printed on letters and the notice for replies by post
    phone: str = ""
    privacy_url: str = ""  # BULLETIN_PRIVACY_URL: the privacy notice linked from every footer
    log_file: Path | None = None
    stale_after_hours: float = 24.0
    retries: int = 5
    retry_max_wait: float = 60.0
    # SendGrid's tracking, set on every request (issue 19): opens as before, clicks off.
    open_tracking: bool = True
    click_tracking: bool = False
    # Sign-off before send (issue 17): approvals a version needs, and who may give them.
    approvals: int = 0
    approvers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # unknown keys, for the CLI to print on stderr
    db_timeout: float = 10.0  # how long to wait for another process's database lock
    in_flight: int = 4  # SendGrid requests awaiting their answer at once
    lease_seconds: float = 60.0  # a sender that renews nothing for this long is dead
    # A send reads contact lists bigger than this (MB, all of a message's files) row by row,
    # twice, holding none (issue 13: a million recipients in 300 MB); smaller ones are held,
    # read once (about 1 s of CPU per 100,000 rows less).
    stream_above_mb: float = 12.0

    @property
    def db_path(self) -> Path:
        """The SQLite file behind BULLETIN_DB (for files beside it; see `db_url`)."""
        if "://" in self.db:
            raise ConfigError(
                f"BULLETIN_DB={self.db.split('://')[0]}://…: this needs a SQLite file; set "
                "BULLETIN_DB to a file path such as bulletin.db"
            )
        return self.resolve(self.db)

    @property
    def db_url(self) -> str | Path:
        """What the ledger opens: a postgresql:// URL as written, or the SQLite file's path."""
        return self.db if "://" in self.db else self.resolve(self.db)

    @property
    def db_exists(self) -> bool:
        """False only for a SQLite file not created yet (a server is assumed to be there)."""
        return "://" in self.db or self.resolve(self.db).exists()

    def resolve(self, path: str | Path) -> Path:
        """Relative paths are relative to the working folder (DESIGN.md)."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.workdir / path

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never be printed; used to scrub error text."""
        return tuple(
            s for s in (self.sendgrid_api_key, self.smtp_password, self.secret) if len(s) >= 4
        )

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def read_environment(workdir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`.env` values overlaid by real environment variables (which always win)."""
    return read_sources(workdir, environ)[0]


def read_sources(
    workdir: Path, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """Values as `read_environment`, and where each came from: ".env" or "the environment"."""
    from dotenv import dotenv_values

    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    env_file = workdir / ".env"
    if env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        sources.update(dict.fromkeys(values, ".env"))
    real = os.environ if environ is None else environ
    values.update(real)
    sources.update(dict.fromkeys(real, "the environment"))
    return values, sources


def unknown_keys(sources: Mapping[str, str]) -> list[str]:
    """A warning for each BULLETIN_*/SMTP_*/SENDGRID_* key bulletin does not read."""
    import difflib

    warnings = []
    for key in sorted(sources):
        if not key.startswith(SETTINGS_PREFIXES) or key in SETTINGS_KEYS or key in TEST_SUITE_KEYS:
            continue
        near = difflib.get_close_matches(key, SETTINGS_KEYS, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else "see .env.example for the settings"
        warnings.append(
            f"warning: {key} (in {sources[key]}) is not a bulletin setting and is ignored; {hint}"
        )
    return warnings


def _fix(name: str, sources: Mapping[str, str]) -> str:
    """Where to correct a setting, named by where its value came from."""
    if sources.get(name) == "the environment":
        return f"fix {name} in the environment (it overrides .env)"
    return "fix it in .env"


def _number(
    env: Mapping[str, str], name: str, sources: Mapping[str, str], default: float | None = None
) -> float:
    """A numeric setting (NUMBERS), refused with where to fix it unless a number in range."""
    kind, number_default, lowest, highest = NUMBERS[name]
    raw = env.get(name, "").strip()
    if not raw:
        return number_default if default is None else default
    try:
        value = kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{name}={raw!r} is not {what}; {_fix(name, sources)}") from None
    if value != value or not lowest <= value <= highest:  # NaN, or out of range
        raise ConfigError(
            f"{name}={raw} is out of range: use {lowest:g} to {highest:g}; {_fix(name, sources)}"
        )
    return value


SWITCHES = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}


def _switch(env: Mapping[str, str], name: str, sources: Mapping[str, str], default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in SWITCHES:
        raise ConfigError(f"{name}={raw!r} is not on or off; {_fix(name, sources)}")
    return SWITCHES[raw]


MIN_SECRET = 32
PLACEHOLDER_SECRET = "a-long-random-string"  # the .env.example line
_BLANK_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_secrets(api_key: str, smtp_password: str, secret: str) -> None:
    """Refuse malformed secrets here, naming the setting and never echoing the value (issue 12):
    an API key holding a newline was printed whole in a header-value traceback."""
    if api_key and _BLANK_OR_CONTROL.search(api_key):
        raise ConfigError(
            "SENDGRID_API_KEY contains a space, tab or line break; copy the key again into .env "
            "(it is not shown here)"
        )
    if smtp_password and _CONTROL.search(smtp_password):
        raise ConfigError("SMTP_PASSWORD contains a control character or line break; fix .env")
    if secret and (_CONTROL.search(secret) or secret.strip() == PLACEHOLDER_SECRET):
        raise ConfigError(
            "BULLETIN_SECRET is the .env.example placeholder or holds a control character; "
            'set a random one, e.g. python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    if secret and len(secret) < MIN_SECRET:
        raise ConfigError(
            f"BULLETIN_SECRET is shorter than {MIN_SECRET} characters; set a random one, e.g. "
            'python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )


def load_settings(
    workdir: Path | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build `Settings` for a working folder, validating every value."""
    workdir = (workdir or Path.cwd()).resolve()
    env, sources = read_sources(workdir, environ)
    get = lambda name, default="": env.get(name, default).strip()  # noqa: E731
    number = lambda name, default=None: _number(env, name, sources, default)  # noqa: E731

    api_key = get("SENDGRID_API_KEY")
    transport = get("BULLETIN_TRANSPORT").lower() or ("sendgrid" if api_key else "outbox")
    if transport not in TRANSPORTS:
        raise ConfigError(
            f"BULLETIN_TRANSPORT={transport!r} is not one of {', '.join(TRANSPORTS)}; "
            + _fix("BULLETIN_TRANSPORT", sources)
        )
    security = get("SMTP_SECURITY", "starttls").lower()
    if security not in SMTP_SECURITY:
        raise ConfigError(
            f"SMTP_SECURITY={security!r} is not one of {', '.join(SMTP_SECURITY)}; "
            + _fix("SMTP_SECURITY", sources)
        )
    default_port = {"ssl": 465, "starttls": 587, "none": 25}[security]
    log_file = get("BULLETIN_LOG")
    _check_secrets(api_key, env.get("SMTP_PASSWORD", ""), env.get("BULLETIN_SECRET", ""))
    return Settings(
        workdir=workdir,
        transport=transport,
        sendgrid_api_key=api_key,
        sendgrid_url=get("BULLETIN_SENDGRID_URL", "https://api.sendgrid.com").rstrip("/"),
        sender=get("BULLETIN_FROM"),
        reply_to=get("BULLETIN_REPLY_TO"),
        db=get("BULLETIN_DB", "bulletin.db") or "bulletin.db",
        outbox=Path(get("BULLETIN_OUTBOX", "outbox") or "outbox"),
        smtp_host=get("SMTP_HOST", "localhost"),
        smtp_port=int(number("SMTP_PORT", default_port)),
        smtp_username=get("SMTP_USERNAME"),
        smtp_connections=int(number("SMTP_CONNECTIONS")),
        smtp_password=env.get("SMTP_PASSWORD", ""),
        smtp_security=security,
        secret=env.get("BULLETIN_SECRET", ""),
        public_url=get("BULLETIN_PUBLIC_URL").rstrip("/"),
        webhook_public_key=get("SENDGRID_WEBHOOK_PUBLIC_KEY"),
        timeout=number("BULLETIN_TIMEOUT"),
        organisation=get("BULLETIN_ORGANISATION", "Metropolitan Police Service"),
        unit=get("BULLETIN_UNIT", "Bromley Borough"),
        postal_address=get("BULLETIN_POSTAL_ADDRESS"),
        phone=get("BULLETIN_PHONE"),
        privacy_url=get("BULLETIN_PRIVACY_URL"),
        log_file=Path(log_file) if log_file else None,
        stale_after_hours=number("BULLETIN_STALE_AFTER_HOURS"),
        retries=int(number("BULLETIN_RETRIES")),
        retry_max_wait=number("BULLETIN_RETRY_MAX_WAIT"),
        warnings=tuple(unknown_keys(sources)),
        open_tracking=_switch(env, "BULLETIN_OPEN_TRACKING", sources, True),
        click_tracking=_switch(env, "BULLETIN_CLICK_TRACKING", sources, False),
        db_timeout=number("BULLETIN_DB_TIMEOUT"),
        in_flight=int(number("BULLETIN_IN_FLIGHT")),
        lease_seconds=number("BULLETIN_LEASE_SECONDS"),
        stream_above_mb=number("BULLETIN_STREAM_ABOVE_MB"),
        approvals=int(number("BULLETIN_APPROVALS")),
        approvers=_approvers(get("BULLETIN_APPROVERS"), sources),
    )


def _approvers(raw: str, sources: Mapping[str, str]) -> tuple[str, ...]:
    """BULLETIN_APPROVERS: comma-separated addresses, compared in lower case (issue 17)."""
    found = []
    for item in raw.split(","):
        address = item.strip().lower()
        if not address:
            continue
        if "@" not in address or any(c.isspace() or c in '<>"' for c in address):
            raise ConfigError(
                f"BULLETIN_APPROVERS: {item.strip()!r} is not an email address; list bare "
                f"addresses separated by commas; {_fix('BULLETIN_APPROVERS', sources)}"
            )
        found.append(address)
    return tuple(dict.fromkeys(found))
