"""Message names: find a message the user means, or say which ones exist (issue 16)."""

from __future__ import annotations

import difflib
from pathlib import Path


def available_messages(workdir: Path) -> list[str]:
    """The names of the messages in `workdir/messages`, sorted."""
    folder = workdir / "messages"
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.md") if p.is_file())


def nearest(name: str, names: list[str]) -> str | None:
    """The closest existing name to a mistyped one, if any is close enough."""
    matches = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return matches[0] if matches else None


def missing_message(shown: str, name: str, workdir: Path) -> str:
    """One line for a message that does not exist: the nearest one, the list, or how to make it."""
    names = available_messages(workdir)
    guess = nearest(name, names)
    if guess:
        listed = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        return f"{shown}: no such message; did you mean {guess}? Messages here: {listed}"
    if names:
        listed = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        return (
            f"{shown}: no such message. Messages here: {listed}; "
            f"or create it with `bulletin new {name}`"
        )
    return f"{shown}: no such message; create it with `bulletin new {name}`"
