"""Tables that read at any terminal width: choose columns by width, wrap cells, never cut them.

Issue 16: at 80 columns `status` showed `mess… subj… creat…`. Each column has a priority;
the least important columns are left out until the rest fit at their narrowest (the longest
word in the column), and rich then wraps the cells that still need room instead of adding "…".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

GAP = 2  # columns between cells (rich's padding with box=None)
PIPE_WIDTH = 200  # output to a file or a pipe: wide enough that nothing needs wrapping


@dataclass(frozen=True)
class Column:
    """A column: its heading, its priority (0 = always kept) and alignment."""

    header: str
    priority: int = 0
    numeric: bool = False


def narrowest(values: Sequence[str]) -> int:
    """The width a column can wrap down to: its longest word."""
    return max((len(word) for value in values for word in value.split()), default=1)


def natural(values: Sequence[str]) -> int:
    """The width a column needs to show every cell on one line."""
    return max((len(line) for value in values for line in value.splitlines() or [""]), default=0)


def choose_columns(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int
) -> list[tuple[int, int]]:
    """(index, width) of the columns to show, in their order, together no wider than `width`.

    A column fits at its narrowest (its longest word or heading). The least important columns
    are left out until the rest fit (priority 0 is always kept); the room left is then given,
    most important first, to columns that need more than their narrowest.
    """
    cells = [[column.header, *(row[i] for row in rows)] for i, column in enumerate(columns)]
    minimum = [narrowest(values) for values in cells]
    wanted = [max(natural(values), low) for values, low in zip(cells, minimum, strict=True)]
    kept = list(range(len(columns)))
    by_priority = sorted(kept, key=lambda i: (columns[i].priority, i))

    def needed(indexes: list[int]) -> int:
        return sum(minimum[i] for i in indexes) + GAP * (len(indexes) - 1)

    while needed(kept) > width and columns[by_priority[-1]].priority > 0:
        kept.remove(by_priority.pop())
    widths = {i: minimum[i] for i in kept}
    room = width - needed(kept)
    for i in by_priority:
        if room <= 0:
            break
        extra = min(room, wanted[i] - widths[i])
        widths[i] += extra
        room -= extra
    return [(i, widths[i]) for i in kept]


def output_width(environ: Mapping[str, str] | None = None, *, isatty: bool = False) -> int:
    """COLUMNS if set, else the terminal's width, else a width for files and pipes."""
    environ = os.environ if environ is None else environ
    columns = environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if isatty:
        import shutil

        return shutil.get_terminal_size().columns
    return PIPE_WIDTH


def render_table(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> str:
    """The table as text no wider than `width`; cells wrap, none is cut with "…"."""
    import io

    from rich.console import Console
    from rich.table import Table

    kept = choose_columns(columns, rows, width)
    table = Table(box=None, pad_edge=False, show_edge=False)
    for i, column_width in kept:
        table.add_column(
            columns[i].header,
            justify="right" if columns[i].numeric else "left",
            overflow="fold",
            width=column_width,
        )
    for row in rows:
        table.add_row(*(row[i] for i, _ in kept))
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, markup=False, highlight=False, emoji=False, color_system=None
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def local_time(stamp: str | None, zone: tzinfo | None = None) -> str:
    """An ISO time from the database (UTC) as `YYYY-MM-DD HH:MM ZONE` in the user's zone."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(zone)
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname() or moment.strftime('%z')}"
