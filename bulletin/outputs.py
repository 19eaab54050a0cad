"""Output options: a path, or `-` for stdout, with one plain error when a file cannot be written."""

from __future__ import annotations

import sys
from pathlib import Path

from bulletin.errors import InputError
from bulletin.files import write_output as write_private

STDOUT = "-"


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == STDOUT


def cannot_write(path: Path | str, error: OSError, option: str = "-o") -> InputError:
    reason = error.strerror or str(error)
    return InputError(f"cannot write {path}: {reason}; choose another {option} path")


def write_output(path: Path | str, data: bytes, option: str = "-o") -> None:
    """Write `data` to a file, or to stdout for `-`; an unwritable path is a user error."""
    if is_stdout(path):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        write_private(Path(path), data)  # 0600, never through a planted symlink (issue 12)
    except OSError as error:
        raise cannot_write(path, error, option) from None
