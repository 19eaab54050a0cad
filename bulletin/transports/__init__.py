"""Transports: one small interface over SendGrid, SMTP and the outbox folder.

A transport takes a batch of claimed recipients and returns one `Outcome` per recipient:
accepted (with a message id), failed (rejected, with the reason), unknown (the request may or
may not have gone out, so it must never be retried automatically) or pending (certainly not
sent). Failures that stop the whole send raise `Unsent` — the batch was certainly not sent.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple, Protocol

from bulletin.config import Settings
from bulletin.contacts import Contact
from bulletin.errors import ConfigError, TransportError
from bulletin.render import CompiledEmail
from bulletin.tracking import State


class Outgoing(NamedTuple):
    """One recipient of a batch; a tuple, made 100,000 times a send (a third of a frozen
    dataclass's cost)."""

    delivery_id: int
    contact: Contact
    unsubscribe_url: str
    custom_args: Mapping[str, str] = MappingProxyType({})  # read-only: one shared default
    subject_prefix: str = ""
    feedback_url: str = ""  # the "Was this useful?" page for this delivery (issue 18)


class Outcome(NamedTuple):
    """What became of one recipient; a tuple, made 100,000 times a send."""

    delivery_id: int
    state: State
    message_id: str | None = None
    error: str | None = None


def personal_message(compiled: CompiledEmail, item: Outgoing) -> tuple[str, bytes]:
    """One recipient's complete message (Message-ID, bytes) for SMTP and the outbox."""
    from email.utils import make_msgid

    from bulletin.render import Rendered, message_bytes

    rendered = compiled.render(item.contact, item.unsubscribe_url, item.feedback_url)
    if item.subject_prefix:
        rendered = Rendered(item.subject_prefix + rendered.subject, rendered.html, rendered.text)
    message_id = make_msgid(domain=compiled.message.sender.email.rsplit("@", 1)[-1])
    data = message_bytes(
        compiled,
        rendered,
        item.contact.email,
        to_name=item.contact.name,
        unsubscribe_url=item.unsubscribe_url,
        message_id=message_id,
        extra_headers={
            f"X-Bulletin-{k.split('_')[-1].title()}": v for k, v in item.custom_args.items()
        },
    )
    return message_id, data


class Unsent(TransportError):
    """The transport cannot be used (auth, unreachable, interrupted): nothing in the batch went,
    except the recipients in `outcomes` (finished before the transport had to stop)."""

    outcomes: list[Outcome] | tuple[()] = ()


class Transport(Protocol):
    name: str
    batch_size: int

    def describe(self) -> str: ...

    def open(self) -> None: ...

    def send(self, compiled: CompiledEmail, batch: list[Outgoing]) -> list[Outcome]: ...

    def close(self) -> None: ...


class Waiter:
    """Sleeps for back-off, waking early when the user interrupts (Ctrl-C / SIGTERM)."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def wait(self, seconds: float) -> bool:
        """False if interrupted while waiting."""
        return not self.stop.wait(max(0.0, seconds))

    @property
    def interrupted(self) -> bool:
        return self.stop.is_set()

    def now(self) -> float:
        """The Unix time, for rate-limit resets; a test's Waiter gives a fixed one."""
        return time.time()


def backoff(attempt: int, cap: float, base: float = 1.0) -> float:
    """Exponential back-off with full jitter."""
    return random.uniform(0, min(cap, base * 2**attempt))


def make_transport(
    settings: Settings, name: str | None = None, waiter: Waiter | None = None
) -> Transport:
    """The transport DESIGN.md picks: `--transport`, else BULLETIN_TRANSPORT, else the default."""
    name = name or settings.transport
    waiter = waiter or Waiter()
    if name == "sendgrid":
        if not settings.sendgrid_api_key:
            raise ConfigError(
                "the sendgrid transport needs SENDGRID_API_KEY; set it in .env "
                "(or use --transport outbox to write .eml files)"
            )
        from bulletin.transports.sendgrid import SendGridTransport

        return SendGridTransport(settings, waiter)
    if name == "smtp":
        if not settings.smtp_host:
            raise ConfigError("the smtp transport needs SMTP_HOST; set it in .env")
        from bulletin.transports.smtp import SmtpTransport

        return SmtpTransport(settings, waiter)
    if name == "outbox":
        from bulletin.transports.outbox import OutboxTransport

        return OutboxTransport(settings)
    raise ConfigError(f"unknown transport {name!r}; use sendgrid, smtp or outbox")


Progress = Callable[[int], None]
