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
    log_file: Path | None = None
    stale_after_hours: float = 24.0
    retries: int = 5
    retry_max_wait: float = 60.0
    db_timeout: float = 10.0  # how long to wait for another process's database lock

    @property
    def db_path(self) -> Path:
        """The SQLite file behind BULLETIN_DB."""
        if "://" in self.db:
            raise ConfigError(
                f"BULLETIN_DB={self.db.split('://')[0]}://…: only SQLite paths are supported "
                "in this version; set BULLETIN_DB to a file path such as bulletin.db"
            )
        return self.resolve(self.db)

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
    from dotenv import dotenv_values

    values: dict[str, str] = {}
    env_file = workdir / ".env"
    if env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; fix it in .env") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative; fix it in .env")
    return value


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
    env = read_environment(workdir, environ)
    get = lambda name, default="": env.get(name, default).strip()  # noqa: E731

    api_key = get("SENDGRID_API_KEY")
    transport = get("BULLETIN_TRANSPORT").lower() or ("sendgrid" if api_key else "outbox")
    if transport not in TRANSPORTS:
        raise ConfigError(
            f"BULLETIN_TRANSPORT={transport!r} is not one of {', '.join(TRANSPORTS)}; "
            "fix it in .env"
        )
    security = get("SMTP_SECURITY", "starttls").lower()
    if security not in SMTP_SECURITY:
        raise ConfigError(
            f"SMTP_SECURITY={security!r} is not one of {', '.join(SMTP_SECURITY)}; fix it in .env"
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
        smtp_port=int(_number(env, "SMTP_PORT", default_port, int)),
        smtp_username=get("SMTP_USERNAME"),
        smtp_connections=max(1, int(_number(env, "SMTP_CONNECTIONS", 3, int))),
        smtp_password=env.get("SMTP_PASSWORD", ""),
        smtp_security=security,
        secret=env.get("BULLETIN_SECRET", ""),
        public_url=get("BULLETIN_PUBLIC_URL").rstrip("/"),
        webhook_public_key=get("SENDGRID_WEBHOOK_PUBLIC_KEY"),
        timeout=_number(env, "BULLETIN_TIMEOUT", 30.0),
        organisation=get("BULLETIN_ORGANISATION", "Metropolitan Police Service"),
        unit=get("BULLETIN_UNIT", "Bromley Borough"),
        log_file=Path(log_file) if log_file else None,
        stale_after_hours=_number(env, "BULLETIN_STALE_AFTER_HOURS", 24.0),
        retries=int(_number(env, "BULLETIN_RETRIES", 5, int)),
        retry_max_wait=_number(env, "BULLETIN_RETRY_MAX_WAIT", 60.0),
        db_timeout=_number(env, "BULLETIN_DB_TIMEOUT", 10.0),
    )
