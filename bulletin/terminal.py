"""Text from outside (contacts, events, bounce reasons) made safe to print on a terminal."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidi overrides that reorder what the operator reads.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def scrub_text(text: str, keep_newlines: bool = False) -> str:
    """`text` with control characters (ESC sequences, CR, bidi overrides) shown as `?`.

    A bounce reason or an event field printed raw could clear the screen or rewrite what the
    operator sees (`\\x1b[2J`, issue 12); tab and (if asked) newline stay.
    """
    text = _CONTROL.sub("?", text)
    return text if keep_newlines else text.replace("\n", "?")
