"""The one-page A4 notice for a notice board (`bulletin print --notice`, issue 15).

A message may carry its own notice version in the front matter::

    notice:
      headline: We stand together against hate crime
      points:
        - Hate crime is not acceptable and will not be tolerated.
        - Please report all incidents, no matter how small.

Without one, a notice is derived: the subject as the headline, and the first sentence of
each item of the body's first bullet list as the points, the longest dropped until the
page fits. The reporting numbers are always
printed by the layout. Text is plain: no Markdown, no placeholders (nobody's name goes on a
notice board).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from html.parser import HTMLParser

MAX_POINTS = 8
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9“‘\"'(])")


@dataclass(frozen=True)
class Notice:
    headline: str
    points: tuple[str, ...]
    derived: bool = False

    def without_longest_point(self) -> Notice:
        longest = max(range(len(self.points)), key=lambda i: len(self.points[i]))
        return replace(self, points=self.points[:longest] + self.points[longest + 1 :])


def parse_notice(value: object) -> tuple[Notice | None, str | None]:
    """The front matter's `notice:` mapping, or an error sentence."""
    shape = "notice must be 'headline: …' and 'points:' (a list of short sentences)"
    if not isinstance(value, dict) or set(value) - {"headline", "points"}:
        return None, shape
    headline = value.get("headline") or ""
    points = value.get("points") or []
    if isinstance(points, str):
        points = [points]
    if not isinstance(headline, str) or not isinstance(points, list):
        return None, shape
    if not all(isinstance(p, str | int | float) for p in points):
        return None, "notice: each of the points must be one sentence of text"
    if not headline.strip() and not points:
        return None, shape
    return Notice(" ".join(headline.split()), tuple(" ".join(str(p).split()) for p in points)), None


class _FirstList(HTMLParser):
    """Text of the top-level items of the first <ul>/<ol> in a body."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[str] = []
        self.depth = 0  # list nesting inside the first list
        self.done = False

    def handle_starttag(self, tag: str, attrs) -> None:
        if self.done:
            return
        if tag in ("ul", "ol"):
            self.depth += 1
        elif tag == "li" and self.depth == 1:
            self.items.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("ul", "ol") and not self.done and self.depth:
            self.depth -= 1
            self.done = self.depth == 0

    def handle_data(self, data: str) -> None:
        if not self.done and self.depth == 1 and self.items:
            self.items[-1] += data


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    return _SENTENCE_END.split(text, maxsplit=1)[0]


def derive_notice(headline: str, body_html: str) -> Notice:
    """The subject as headline; the first sentence of each key message (the first list)."""
    parser = _FirstList()
    parser.feed(body_html)
    points = [first_sentence(item) for item in parser.items if item.strip()]
    return Notice(" ".join(headline.split()), tuple(points[:MAX_POINTS]), derived=True)
