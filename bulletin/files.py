"""Files with personal data: created 0600 whatever the umask, never through a planted symlink.

Issue 12: outbox, lock, notice and export files were opened `O_CREAT|O_TRUNC` and followed a
symlink someone had placed at their name, and `status --csv`, `preview -o`, `print`, `report -o`
and `BULLETIN_LOG` came out 0644 under the usual umask 022.
"""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from pathlib import Path

from bulletin.errors import ConfigError

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafePath(ConfigError):
    """A path bulletin will not write through (a symlink, a folder others may write to)."""


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """A file descriptor for `path`, mode 0600, refusing a symlink at its name."""
    try:
        fd = os.open(path, flags | NOFOLLOW, 0o600)
    except OSError as error:
        if os.path.islink(path):
            raise UnsafePath(
                f"{path} is a symbolic link; bulletin does not write through one: remove it"
            ) from None
        raise error
    with suppress(OSError):  # an existing file keeps its old mode through O_TRUNC
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Write `path` 0600: directly, or through a fresh `NAME.tmp` (O_EXCL) replaced atomically."""
    temporary = path.with_name(path.name + ".tmp")
    with suppress(FileNotFoundError):  # a killed run's leftover, or something planted there
        os.unlink(temporary)
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)  # replaces a symlink at `path`, never writes through it
    except OSError:
        with suppress(OSError):
            os.unlink(temporary)
        raise


def write_output(path: Path, data: bytes) -> None:
    """A file the user asked for (`-o`, `--csv`): 0600, not through a symlink."""
    with os.fdopen(open_private(path), "wb") as handle:
        handle.write(data)


def private_folder(folder: Path) -> None:
    """Make `folder` 0700, or refuse one that is a symlink or that others may write to."""
    if folder.is_symlink():
        raise UnsafePath(f"{folder} is a symbolic link; point BULLETIN_OUTBOX at a real folder")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = folder.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePath(
            f"{folder} can be written by other users (mode {stat.filemode(mode)}); "
            f"run: chmod 700 {folder}"
        )
