"""'Was this useful?': the question every email asks, and the signed links that answer it.

A message's front matter sets the question (issue 18):

    feedback: Did this message help you?          # the question; the default labels
    feedback:                                     # or a mapping: question and labels
      question: Was this update useful?
      useful: Yes, useful
      not_useful: Not really
      concern: I have a worry
    feedback: false                               # no question in this message

Without `feedback:` every email asks DEFAULT_QUESTION. Each link carries a token bound to one
delivery (send + recipient) and signed with BULLETIN_SECRET, with the purpose "feedback", so
an unsubscribe token never works here and a feedback token never unsubscribes anyone.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from bulletin.signing import delivery_signature, delivery_signer

USEFUL, NOT_USEFUL, CONCERN = "useful", "not_useful", "concern"
ANSWERS = (USEFUL, NOT_USEFUL, CONCERN)
ANSWER_WORDS = {USEFUL: "Useful", NOT_USEFUL: "Not useful", CONCERN: "I have a concern"}
DEFAULT_QUESTION = "Was this message useful?"
MAX_COMMENT = 2000  # characters
MAX_TEXT = 200  # characters of a question or label in front matter
PURPOSE = "feedback"
_TOKEN = re.compile(r"^(\d{1,12})\.(\d{1,15})\.([A-Za-z0-9_-]{22})$")


@dataclass(frozen=True)
class Question:
    """What the email asks and the words on its three links."""

    question: str = DEFAULT_QUESTION
    useful: str = ANSWER_WORDS[USEFUL]
    not_useful: str = ANSWER_WORDS[NOT_USEFUL]
    concern: str = ANSWER_WORDS[CONCERN]

    def label(self, answer: str) -> str:
        return getattr(self, answer)


DEFAULT = Question()


def parse_question(value: object) -> tuple[Question | None, str | None]:
    """The front matter's `feedback:` value → (Question or None for `false`, error sentence)."""
    shape = (
        "feedback must be a question (text), false to leave it out, or a mapping with "
        "question: and optionally useful:, not_useful:, concern:"
    )
    if value is False:
        return None, None
    if value is None or value is True:
        return DEFAULT, None
    if isinstance(value, str):
        value = {"question": value}
    if not isinstance(value, dict) or set(map(str, value)) - {"question", *ANSWERS}:
        return DEFAULT, shape
    texts = {}
    for key, text in value.items():
        if not isinstance(text, str) or not text.strip():
            return DEFAULT, f"feedback: {key} must be text"
        text = " ".join(text.split())
        if len(text) > MAX_TEXT:
            return DEFAULT, f"feedback: {key} is over {MAX_TEXT} characters; shorten it"
        texts[str(key)] = text
    return Question(**texts), None


# --- signed links ------------------------------------------------------------------------------


def _signature(secret: str, send_id: int, delivery_id: int, email: str) -> str:
    return delivery_signature(PURPOSE, secret, send_id, delivery_id, email)


def make_token(secret: str, send_id: int, delivery_id: int, email: str) -> str:
    return f"{send_id}.{delivery_id}.{_signature(secret, send_id, delivery_id, email)}"


def link_maker(secret: str, public_url: str, send_id: int) -> Callable[[int, str], str]:
    """`link(delivery_id, email)`: feedback_url(public_url, make_token(…)) for one send, made
    once a batch: 100,000 links a send."""
    sign = delivery_signer(PURPOSE, secret, send_id)
    prefix = feedback_url(public_url, f"{send_id}.")

    def link(delivery_id: int, email: str) -> str:
        return f"{prefix}{delivery_id}.{sign(delivery_id, email)}"

    return link


def parse_token(token: str) -> tuple[int, int] | None:
    """(send id, delivery id) if the token is well-formed, else None."""
    match = _TOKEN.match(token or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def verify_token(secret: str, token: str, email: str) -> bool:
    """True if `token` was made with `secret` for this delivery and this address."""
    match = _TOKEN.match(token or "")
    if match is None or not secret or not email:
        return False
    expected = _signature(secret, int(match.group(1)), int(match.group(2)), email)
    return hmac.compare_digest(expected, match.group(3))


def feedback_url(public_url: str, token: str) -> str:
    """The page's address without the answer; the email's links add `&a=ANSWER`."""
    return f"{public_url.rstrip('/')}/feedback?t={token}"


# --- comments ------------------------------------------------------------------------------


def clean_comment(text: str) -> str:
    """A comment as stored: line ends made `\\n`, NULs dropped, surrounding blank space cut.

    Anything else is kept as typed, HTML and formulas included: every output escapes it.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()


def terminal_text(text: str) -> str:
    """A comment safe to print: control characters (ESC…) shown as \\xNN, lines indented."""
    out = []
    for character in text:
        if character == "\n":
            out.append("\n    ")
        elif unicodedata.category(character) in ("Cc", "Cf", "Co", "Cs"):
            code = ord(character)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(character)
    return "".join(out)
