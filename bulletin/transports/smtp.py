"""SMTP through the standard library: one connection reused, reconnecting when dropped."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from email.utils import make_msgid

from bulletin.config import Settings
from bulletin.render import CompiledEmail, Rendered, message_bytes
from bulletin.tracking import State
from bulletin.transports import Outcome, Outgoing, Unsent, Waiter, backoff


class SmtpTransport:
    name = "smtp"
    # One message per claim: each is marked `sending` before its DATA and `accepted` after its
    # 250, so a crash leaves at most the one in flight unknown (not a whole batch).
    batch_size = 1

    def __init__(self, settings: Settings, waiter: Waiter) -> None:
        self.settings = settings
        self.waiter = waiter
        self._smtp: smtplib.SMTP | None = None

    @property
    def where(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def describe(self) -> str:
        return f"SMTP ({self.where}, {self.settings.smtp_security})"

    def open(self) -> None:
        self._connect()

    def _connect(self) -> None:
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

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None

    def send(self, compiled: CompiledEmail, batch: list[Outgoing]) -> list[Outcome]:
        domain = compiled.message.sender.email.rsplit("@", 1)[-1]
        outcomes: list[Outcome] = []
        for item in batch:
            if self.waiter.interrupted:  # Ctrl-C: abandon the rest of the batch, unsent
                outcomes.append(Outcome(item.delivery_id, State.PENDING, error="interrupted"))
                continue
            try:
                outcomes.append(self._send_one(compiled, item, domain))
            except Unsent as error:
                # Those already accepted must be recorded, or a re-run would send them twice.
                error.outcomes = outcomes
                raise
        return outcomes

    def _send_one(self, compiled: CompiledEmail, item: Outgoing, domain: str) -> Outcome:
        rendered = compiled.render(item.contact, item.unsubscribe_url)
        if item.subject_prefix:
            rendered = Rendered(
                item.subject_prefix + rendered.subject, rendered.html, rendered.text
            )
        message_id = make_msgid(domain=domain)
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
        sender = compiled.message.sender.email
        last_error = ""
        for attempt in range(self.settings.retries + 1):
            if attempt and not self.waiter.wait(
                backoff(attempt - 1, self.settings.retry_max_wait, base=0.5)
            ):
                return Outcome(item.delivery_id, State.PENDING, error="interrupted")
            if self._smtp is None:
                self._connect()
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
