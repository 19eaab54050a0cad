"""`bulletin feedback SEND`: readers' answers and comments, on screen or as CSV (issue 18)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bulletin.errors import InputError
from bulletin.feedback import ANSWER_WORDS, ANSWERS
from bulletin.ledger.feedback import Answer, FeedbackStore
from bulletin.status import neutralise

if TYPE_CHECKING:
    from bulletin.ledger.store import Ledger as Tracker
    from bulletin.ledger.store import SendRow

CSV_COLUMNS = (
    "send_id",
    "email",
    "first_name",
    "last_name",
    "ward",
    "answer",
    "comment",
    "answered_at",
    "commented_at",
)


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    comments: list[Answer]  # newest first

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def share(self, answer: str) -> float:
        return self.counts[answer] / self.total if self.total else 0.0


def summarise(tracker: Tracker, send: SendRow) -> Summary:
    store = FeedbackStore(tracker)
    return Summary(store.counts(send.id), store.comments(send.id))


def describe(summary: Summary) -> list[str]:
    """The counts with their shares, one line each."""
    lines = []
    for answer in ANSWERS:
        n = summary.counts[answer]
        share = f"  {summary.share(answer):6.1%}" if summary.total else ""
        lines.append(f"  {ANSWER_WORDS[answer]:<18}{n:>6}{share}")
    lines.append(f"  {'answers':<18}{summary.total:>6}")
    return lines


def open_private(path: Path, option: str = "--csv"):
    """A new or emptied text file only its owner may read (0600), never through a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as error:
        raise InputError(
            f"cannot write {path}: {error.strerror}; choose another {option} path"
        ) from None
    os.fchmod(fd, 0o600)  # a file that existed keeps its old mode otherwise
    return os.fdopen(fd, "w", newline="", encoding="utf-8")


def write_csv(tracker: Tracker, send: SendRow, path: Path) -> int:
    """One row per answer, formulas neutralised; returns the number of rows."""
    answers = FeedbackStore(tracker).answers(send.id)
    with open_private(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for answer in answers:
            writer.writerow(
                [
                    answer.send_id,
                    *(neutralise(getattr(answer, column)) for column in CSV_COLUMNS[1:]),
                ]
            )
    return len(answers)
