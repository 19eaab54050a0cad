"""Exceptions and exit codes. The CLI maps each exception to one exit code (DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path


class ExitCode(IntEnum):
    OK = 0
    INVALID = 1  # invalid input or configuration; nothing sent
    USAGE = 2  # command-line usage
    PARTIAL = 3  # the send finished but some recipients failed
    TRANSPORT = 4  # could not send at all (auth, transport down)
    INTERRUPTED = 130  # Ctrl-C / SIGTERM, state recorded, resumable


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, located as `FILE:LINE: text`."""

    file: Path | str | None
    line: int | None
    text: str

    def __str__(self) -> str:
        if self.file is None:
            return self.text
        where = str(self.file) if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.text}"


class BulletinError(Exception):
    """A user-facing error: printed as one line per problem, never as a traceback."""

    exit_code: ExitCode = ExitCode.INVALID

    def __init__(self, message: str = "", problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])

    def lines(self) -> list[str]:
        lines = [str(p) for p in self.problems]
        if str(self):
            lines.append(str(self))
        return lines


class InputError(BulletinError):
    """A message, contact list or option is wrong."""


class ConfigError(BulletinError):
    """A setting in .env or the environment is missing or wrong."""


class PartialSendError(BulletinError):
    exit_code = ExitCode.PARTIAL


class TransportError(BulletinError):
    """The transport refused us outright (auth) or is unreachable."""

    exit_code = ExitCode.TRANSPORT


class Interrupted(BulletinError):
    exit_code = ExitCode.INTERRUPTED


class DatabaseError(BulletinError):
    """The tracking database failed; the message says what to do."""

    exit_code = ExitCode.TRANSPORT
