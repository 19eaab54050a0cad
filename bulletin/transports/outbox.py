"""The outbox transport: one .eml file per recipient; nothing is emailed."""

from __future__ import annotations

from bulletin.config import Settings
from bulletin.files import private_folder, write_private
from bulletin.render import CompiledEmail
from bulletin.tracking import State
from bulletin.transports import Outcome, Outgoing, Unsent, personal_message


class OutboxTransport:
    name = "outbox"
    batch_size = 500

    def __init__(self, settings: Settings) -> None:
        self.folder = settings.resolve(settings.outbox)

    def describe(self) -> str:
        return f"outbox: .eml files in {self.folder}/ (nothing is emailed)"

    def open(self) -> None:
        try:
            private_folder(self.folder)
        except OSError as error:
            raise Unsent(f"cannot create the outbox {self.folder}: {error.strerror}") from None

    def send(self, compiled: CompiledEmail, batch: list[Outgoing]) -> list[Outcome]:
        outcomes = []
        for item in batch:
            message_id, data = personal_message(compiled, item)
            name = eml_name(item.custom_args.get("bulletin_send", "test"), item.delivery_id)
            try:
                _write_private(self.folder / name, data)
            except OSError as error:  # disk full, read-only: stop, keeping what was written
                stop = Unsent(
                    f"cannot write to the outbox {self.folder}: {error.strerror}; "
                    "fix that and run the same command again"
                )
                stop.outcomes = outcomes
                raise stop from None
            outcomes.append(Outcome(item.delivery_id, State.ACCEPTED, message_id))
        return outcomes

    def close(self) -> None:
        pass


def eml_name(send: str, delivery_id: int) -> str:
    """The outbox file of one delivery; a test copy is `test-0000000.eml`."""
    return f"{send}-{delivery_id:07d}.eml"


def _write_private(path, data: bytes) -> None:
    """Write atomically with mode 0600: a crash never leaves half a message."""
    write_private(path, data)
