"""Accessibility problems a writer can fix in the Markdown, found by `bulletin check` (issue 20).

These are warnings, not errors: the message can still be sent. Each names the line and what
to write instead. The rules follow GOV.UK's content guidance for links, headings, images and
capitals, as screen-reader users and people with dyslexia meet them:

- an image without alt text (a screen reader says "image" or reads its file name);
- link text that says nothing out of context ("click here", "read more") or is a bare URL
  (read out character by character);
- a heading that skips a level (the subject is the email's only level-1 heading, so the body
  starts at `##`);
- a paragraph in capitals (harder to read, and some screen readers spell it out).
"""

from __future__ import annotations

import re

from bulletin.errors import Problem

VAGUE_LINK_TEXT = {
    "click here",
    "click",
    "here",
    "this",
    "this link",
    "link",
    "read more",
    "more",
    "more info",
    "more information",
    "find out more",
    "learn more",
    "see more",
    "details",
    "go",
    "website",
}
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})(?:\s+|$)(.*)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]*)\)")
_HTML_IMAGE = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_ALT = re.compile(r"""\balt\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)]*)\)")
_AUTOLINK = re.compile(r"<((?:https?://|www\.)[^>\s]+)>", re.IGNORECASE)
_HTML_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)
_URL = re.compile(r"^(?:https?://|www\.)\S+$", re.IGNORECASE)
_MARKER = re.compile(r"^\s*(?:[-*+]\s+|\d+[.)]\s+|>\s?)+")
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}")


def _link_problem(text: str) -> str | None:
    plain = " ".join(re.sub(r"[*_`]", "", text).split())
    if plain.lower().strip(" .…:!") in VAGUE_LINK_TEXT:
        return (
            f'link text "{plain}" does not say where the link goes; '
            "describe it, e.g. [ward surgery times](https://…)"
        )
    if _URL.match(plain):
        return (
            f"link text is a bare web address ({plain[:40]}); screen readers spell it out: "
            "use words, e.g. [ward surgery times](https://…)"
        )
    return None


def _in_capitals(paragraph: str) -> bool:
    text = _PLACEHOLDER.sub("", paragraph)
    text = re.sub(r"\]\([^)]*\)|https?://\S+|<[^>]+>", "", text)
    letters = [c for c in text if c.isalpha()]
    words = [w for w in re.findall(r"[^\W\d_]+", text) if len(w) > 1]
    if len(letters) < 20 or len(words) < 4:
        return False
    return sum(c.isupper() for c in letters) / len(letters) > 0.8


def accessibility_problems(body: str, file: str, first_line: int = 1) -> list[Problem]:
    """Every problem in a message body, with the line it is on (`first_line` = the body's)."""
    problems: list[Problem] = []

    def warn(offset: int, text: str) -> None:
        problems.append(Problem(file, first_line + offset, f"accessibility: {text}"))

    level = 1  # the subject is the email's heading 1
    in_code = False
    paragraph: list[tuple[int, str]] = []

    def end_paragraph() -> None:
        if paragraph and _in_capitals(" ".join(text for _, text in paragraph)):
            warn(
                paragraph[0][0],
                "a paragraph in capitals is hard to read; write it in sentence case "
                "(use **bold** for emphasis)",
            )
        paragraph.clear()

    for offset, line in enumerate(body.splitlines()):
        if _FENCE.match(line):
            in_code = not in_code
            end_paragraph()
            continue
        if in_code or (line.startswith(("    ", "\t")) and not paragraph):  # code
            continue
        heading = _HEADING.match(line)
        if heading:
            end_paragraph()
            new = len(heading.group(1))
            if new > level + 1:
                warn(
                    offset,
                    f"heading level {new} follows level {level}; use {'#' * (level + 1)} "
                    "(the subject is level 1, so the body's headings start at ##)",
                )
            level = new
            if _in_capitals(heading.group(2)):
                warn(offset, "a heading in capitals is hard to read; write it in sentence case")
            continue
        for match in _IMAGE.finditer(line):
            if not match.group(1).strip():
                warn(offset, "an image has no alt text; describe it: ![what it shows](…)")
        for tag in _HTML_IMAGE.findall(line):
            alt = _ALT.search(tag)
            if alt is None or not any(alt.groups()):
                warn(offset, 'an image has no alt text; add alt="what it shows"')
        for pattern in (_LINK, _HTML_LINK):
            for match in pattern.finditer(line):
                problem = _link_problem(re.sub(r"<[^>]+>", "", match.group(1)))
                if problem:
                    warn(offset, problem)
        for match in _AUTOLINK.finditer(line):
            warn(offset, _link_problem(match.group(1)))
        text = _MARKER.sub("", line).strip()
        if not text or _MARKER.match(line):
            end_paragraph()  # a list item or quote line starts a new block
        if text:
            paragraph.append((offset, text))
    end_paragraph()
    return problems
