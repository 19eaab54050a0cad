"""SMTP through the standard library: a few connections, each reused, reconnecting when dropped.

SMTP answers one command at a time, so a single connection spends most of its life waiting.
`SMTP_CONNECTIONS` sessions (default 3) send side by side, one message each per batch; each
message is claimed before its DATA and recorded after its 250, so a crash leaves at most one
message per connection `unknown`.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor

from bulletin.config import Settings
from bulletin.render import CompiledEmail
from bulletin.tracking import State
from bulletin.transports import Outcome, Outgoing, Unsent, Waiter, backoff, personal_message


class SmtpTransport:
    name = "smtp"

    def __init__(self, settings: Settings, waiter: Waiter) -> None:
        self.settings = settings
        self.waiter = waiter
        self.batch_size = settings.smtp_connections
        self._sessions = [_Session(settings, waiter) for _ in range(settings.smtp_connections)]
        self._pool: ThreadPoolExecutor | None = None

    def describe(self) -> str:
        s = self.settings
        connections = f", {s.smtp_connections} connections" if s.smtp_connections > 1 else ""
        return f"SMTP ({self._sessions[0].where}, {s.smtp_security}{connections})"

    def open(self) -> None:
        self._sessions[0].connect()  # fail fast on a wrong host or password
        if len(self._sessions) > 1:
            self._pool = ThreadPoolExecutor(len(self._sessions), thread_name_prefix="smtp")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for session in self._sessions:
            session.quit()

    def send(self, compiled: CompiledEmail, batch: list[Outgoing]) -> list[Outcome]:
        if self._pool is None or len(batch) == 1:
            jobs = [(self._sessions[i % len(self._sessions)], item) for i, item in enumerate(batch)]
            return _gather([_run(session.send, compiled, item) for session, item in jobs])
        futures = [
            self._pool.submit(_run, self._sessions[i % len(self._sessions)].send, compiled, item)
            for i, item in enumerate(batch)
        ]
        return _gather([future.result() for future in futures])


def _run(send, compiled: CompiledEmail, item: Outgoing) -> Outcome | Unsent:
    try:
        return send(compiled, item)
    except Unsent as error:
        return error


def _gather(results: list[Outcome | Unsent]) -> list[Outcome]:
    """Outcomes in batch order; if any session could not send, raise with the others' results."""
    failures = [r for r in results if isinstance(r, Unsent)]
    outcomes = [r for r in results if isinstance(r, Outcome)]
    if failures:
        # Those already accepted must be recorded, or a re-run would send them twice.
        failures[0].outcomes = outcomes
        raise failures[0]
    return outcomes


class _Session:
    """One SMTP connection and the retry rules for one message at a time."""

    def __init__(self, settings: Settings, waiter: Waiter) -> None:
        self.settings = settings
        self.waiter = waiter
        self._smtp: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def connect(self) -> None:
        s = self.settings
        try:
            if s.smtp_security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    s.smtp_host,
                    s.smtp_port,
                    timeout=s.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout)
                if s.smtp_security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password)
        except smtplib.SMTPAuthenticationError as error:
            raise Unsent(
                f"{self.where} rejected SMTP_USERNAME / SMTP_PASSWORD "
                f"({error.smtp_code}); check them in .env"
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise Unsent(
                f"{self.where} does not offer STARTTLS; set SMTP_SECURITY=ssl or none in .env"
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            raise Unsent(
                f"cannot connect to the SMTP server {self.where} ({error}); check "
                "SMTP_HOST / SMTP_PORT and run the same command again"
            ) from None
        self._smtp = smtp

    def quit(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None

    def send(self, compiled: CompiledEmail, item: Outgoing) -> Outcome:
        if self.waiter.interrupted:  # Ctrl-C: abandon what is not yet in flight, unsent
            return Outcome(item.delivery_id, State.PENDING, error="interrupted")
        message_id, data = personal_message(compiled, item)
        sender = compiled.message.sender.email
        last_error = ""
        for attempt in range(self.settings.retries + 1):
            if attempt and not self.waiter.wait(
                backoff(attempt - 1, self.settings.retry_max_wait, base=0.5)
            ):
                return Outcome(item.delivery_id, State.PENDING, error="interrupted")
            if self._smtp is None:
                self.connect()
            try:
                self._smtp.sendmail(sender, [item.contact.email], data)
                return Outcome(item.delivery_id, State.ACCEPTED, message_id)
            except smtplib.SMTPRecipientsRefused as error:
                code, text = next(iter(error.recipients.values()))
                last_error = f"{code} {_text(text)}"
                if code >= 500:
                    return Outcome(item.delivery_id, State.FAILED, error=last_error)
                self._reset()
            except smtplib.SMTPSenderRefused as error:
                raise Unsent(
                    f"{self.where} refused the sender {sender} ({error.smtp_code} "
                    f"{_text(error.smtp_error)}); check 'from:' / BULLETIN_FROM"
                ) from None
            except smtplib.SMTPResponseException as error:
                last_error = f"{error.smtp_code} {_text(error.smtp_error)}"
                if error.smtp_code >= 500:
                    self._reset()
                    return Outcome(item.delivery_id, State.FAILED, error=last_error)
                self._drop()  # 421 closes the session; for 4xx a fresh session is safest
            except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as error:
                # Dropped before the final reply to DATA: the server has not taken the message.
                last_error = f"connection lost ({error or type(error).__name__})"
                self._drop()
        return Outcome(
            item.delivery_id, State.PENDING, error=f"temporary failure, will retry: {last_error}"
        )

    def _reset(self) -> None:
        try:
            self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self._drop()

    def _drop(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError):
                self._smtp.close()
        self._smtp = None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
