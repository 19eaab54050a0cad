"""The address block of a letter, fitted to a DL / C5 envelope window or refused (issue 15).

Royal Mail's and GOV.UK Notify's rules: at most 7 lines including the postcode, postcode last,
inside a window of about 90 × 35 mm. Nothing may be hidden, so the block is fitted here, in
Python, before WeasyPrint sees it: long lines wrap between words, the type shrinks from
`LARGEST` down to `SMALLEST` points, and an address that still does not fit is refused with
a reason. `check` and `print` both call `fit_address`, so they always agree.

Widths are measured with a conservative model of DejaVu Sans (the print font): every glyph
is given at least its real advance width, and anything unknown counts as a full em. Arial,
the fallback font, is narrower, so a line that fits the model fits the page.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

MAX_LINES = 7  # Royal Mail / Notify: name and address lines, postcode included
LARGEST = 12.0  # pt: the letter's body size
SMALLEST = 8.0  # pt: the floor below which an address is refused
UNWRAPPED = 10.0  # pt: smaller type than this only after wrapping lines has been tried
STEP = 0.5
LINE_HEIGHT = 1.2
POSTCODE_SPACING = 0.3  # pt of letter-spacing on the postcode line (print.css)
MM = 72 / 25.4  # points per millimetre

# The window (print.css `.window`): its position on the sheet and its padding, in mm.
WINDOW_LEFT, WINDOW_TOP, WINDOW_WIDTH, WINDOW_HEIGHT = 20.0, 50.0, 90.0, 35.0
PADDING_TOP, PADDING_RIGHT, PADDING_BOTTOM, PADDING_LEFT = 3.0, 3.0, 2.0, 3.0
TEXT_WIDTH = (WINDOW_WIDTH - PADDING_LEFT - PADDING_RIGHT) * MM  # pt
TEXT_HEIGHT = (WINDOW_HEIGHT - PADDING_TOP - PADDING_BOTTOM) * MM  # pt

# Advance widths in ems, each class rounded up from DejaVu Sans's real widths.
_CLASSES = {
    0.33: " '.,·‘’ijlI",
    0.42: "/:;\\|!-()[]frt",
    0.54: '"*_`?sz“”–',
    0.64: "acdeghnopquvxybkLFPTYESJ$0123456789{}£¢¥",
    0.79: "ABCDGHKNOQRUVXZ&",
}
_WIDTH = {ch: w for w, chars in _CLASSES.items() for ch in chars}
_UNKNOWN = 1.0  # m, w, M, W, @, % …, and any other script


def text_width(text: str, size: float, spacing: float = 0.0) -> float:
    """A safe upper bound of the text's width in points at `size` pt."""
    ems = 0.0
    for ch in text:
        base = unicodedata.normalize("NFD", ch)[:1] or ch  # é → e
        ems += _WIDTH.get(ch, _WIDTH.get(base, _UNKNOWN))
    return ems * size + spacing * len(text)


def _wrap(line: str, size: float, spacing: float = 0.0) -> list[str] | None:
    """The line broken between words (or after a hyphen) to fit; None if a word cannot."""
    words: list[str] = []
    for word in line.split():
        if text_width(word, size, spacing) <= TEXT_WIDTH:
            words.append(word)
            continue
        pieces = re.findall(r"[^-]+-?|-", word)  # "Featherstonehaugh-Smythe" at its hyphen
        if any(text_width(p, size, spacing) > TEXT_WIDTH for p in pieces):
            return None
        words.extend(f"\0{p}" if i else p for i, p in enumerate(pieces))  # \0: no space
    out: list[str] = []
    for word in words:
        glued = word.startswith("\0")
        word = word.lstrip("\0")
        if out:
            joined = out[-1] + ("" if glued else " ") + word
            if text_width(joined, size, spacing) <= TEXT_WIDTH:
                out[-1] = joined
                continue
        out.append(word)
    return out


def _fit(lines: list[str], postcode: str, size: float, wrap: bool) -> list[Line] | None:
    fitted: list[Line] = []
    for line in lines:
        wrapped = _wrap(line, size)
        if wrapped is None or (len(wrapped) > 1 and not wrap):
            return None
        fitted += [Line(part) for part in wrapped]
    if postcode:
        if text_width(postcode, size, POSTCODE_SPACING) > TEXT_WIDTH:
            return None
        fitted.append(Line(postcode, postcode=True))
    return fitted


@dataclass(frozen=True)
class Line:
    text: str
    postcode: bool = False


@dataclass(frozen=True)
class AddressFit:
    """The printed block: physical lines at one type size, or why it cannot be printed."""

    lines: tuple[Line, ...] = ()
    size: float = LARGEST
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def fit_address(lines: Sequence[str], postcode: str) -> AddressFit:
    """Fit name + address lines + postcode in the window at the largest size that shows all."""
    lines = [" ".join(ln.split()) for ln in lines if ln.strip()]
    postcode = " ".join(postcode.split()).upper()
    count = len(lines) + bool(postcode)
    if count > MAX_LINES:
        return AddressFit(
            problem=f"the address has {count} lines; an envelope window takes at most "
            f"{MAX_LINES}, postcode included: join or shorten lines"
        )
    # One printed line per address line down to UNWRAPPED pt; below that, wrap instead.
    for wrap, floor in ((False, UNWRAPPED), (True, SMALLEST)):
        size = LARGEST
        while size >= floor:
            fitted = _fit(lines, postcode, size, wrap)
            if fitted is not None and len(fitted) * size * LINE_HEIGHT <= TEXT_HEIGHT:
                return AddressFit(tuple(fitted), size)
            size -= STEP
    return AddressFit(
        problem=f"the address does not fit the envelope window even at {SMALLEST:g} pt "
        f"({WINDOW_WIDTH:g} × {WINDOW_HEIGHT:g} mm): shorten its longest lines"
    )


def address_lines(name: str, address: str) -> list[str]:
    """The name, then the address split at its line breaks and commas."""
    return [ln.strip() for ln in [name, *re.split(r"[\n,]", address)] if ln.strip()]


def fit_contact(contact) -> AddressFit:
    """`fit_address` for a contact's name, address and postcode."""
    return fit_address(address_lines(contact.name, contact.get("address")), contact.get("postcode"))
