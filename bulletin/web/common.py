"""What our apps share: response headers, log lines that are safe to print, bounded bodies."""

from __future__ import annotations

import asyncio
import re
import unicodedata

from starlette.requests import ClientDisconnect, Request

MAX_DRAIN = 16 * 1024 * 1024  # an oversized body up to this is read and dropped before a 413
BODY_DEADLINE = 30.0  # seconds for a whole request body, however slowly it trickles in
_QUERY = re.compile(r"\?[^\s'\"]*")


class BodyRefused(Exception):
    """The body will not be read: `status` and `text` say why (411, 413)."""

    def __init__(self, status: int, text: str, note: str = "") -> None:
        super().__init__(text)
        self.status, self.text, self.note = status, text, note


class BodyTimedOut(Exception):
    """The client did not send its whole body within BODY_DEADLINE."""


def printable(text: str, limit: int = 80) -> str:
    """`text` with control and format characters shown as \\xNN, cut to `limit` characters.

    Paths and notes come from the network; an ESC in `GET /\\x1b[2J` must not reach the
    operator's terminal raw (issue 12, finding 12).
    """
    out = []
    for character in text[:limit]:
        if unicodedata.category(character)[0] in "CZ" and character != " ":
            code = ord(character)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(character)
    return "".join(out) + ("…" if len(text) > limit else "")


def without_query(text: str) -> str:
    return _QUERY.sub("?…", text)


async def read_body(
    request: Request, limit: int, *, deadline: float = BODY_DEADLINE
) -> bytes | None:
    """The whole body, at most `limit` bytes, within `deadline` seconds for all of it.

    None if the client went away. BodyRefused for chunked or oversized bodies (an announced
    length over the limit is refused before reading a byte), BodyTimedOut past the deadline.
    """
    headers = request.headers
    if "transfer-encoding" in headers:
        raise BodyRefused(411, "Send a Content-Length, not chunks.")
    raw = headers.get("content-length")
    if raw is None:
        return b""
    if not (raw.isascii() and raw.isdigit()):  # uvicorn refuses these first; belt and braces
        raise BodyRefused(400, "Content-Length is not a number.")
    if int(raw) > limit:
        if int(raw) <= MAX_DRAIN:  # read and drop it, so the client reads our answer, not a reset
            await _drain(request, deadline)
        raise BodyRefused(413, f"The body is over {limit:,} bytes.", f"body of {int(raw):,} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(deadline):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyRefused(413, f"The body is over {limit:,} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimedOut from None
    except ClientDisconnect:
        return None
    return b"".join(chunks)


async def _drain(request: Request, deadline: float) -> None:
    try:
        async with asyncio.timeout(deadline):
            async for _chunk in request.stream():
                pass
    except (TimeoutError, ClientDisconnect):
        pass
