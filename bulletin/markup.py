"""Markdown → safe HTML (sanitised, phone numbers as tel: links) and HTML → plain text.

The plain text is not hard-wrapped: each paragraph is one line, which every mail client
wraps to its own width, so it reads well on a phone. RFC 3676 `format=flowed` would allow
wrapped lines that reflow, but SendGrid's API cannot declare it (its content `type` may not
contain ";" parameters), and one text part for every transport is simpler (issue 15, item 5).
"""

from __future__ import annotations

import re

RULE_WIDTH = 24  # underlines under headings: short enough never to wrap on a phone
URL_SCHEMES = {"http", "https", "mailto", "tel"}

# 999, 101, 111 and UK numbers starting 0 with 10–11 digits (spaces allowed).
_PHONE = re.compile(r"(?<![\w£$.,/-])(999|101|111|0\d{2,4}(?: ?\d){6,8})(?![\w/-]|[.,]\d)")
_TAG = re.compile(r"(<[^>]*>)")


def markdown_to_html(body: str) -> str:
    """Render the message body; raw HTML in it is sanitised by nh3."""
    import markdown
    import nh3

    html = markdown.markdown(
        body, extensions=["extra", "sane_lists", "smarty"], output_format="html"
    )
    clean = nh3.clean(html, url_schemes=URL_SCHEMES, link_rel="noopener noreferrer")
    return link_phone_numbers(clean)


def _tel(match: re.Match[str]) -> str:
    number = match.group(1)
    digits = number.replace(" ", "")
    if digits.startswith("0") and len(digits) not in (10, 11):
        return number
    return f'<a href="tel:{digits}">{number}</a>'


def link_phone_numbers(html: str) -> str:
    """Turn phone numbers in text (not inside links or code) into tel: links."""
    out: list[str] = []
    skip_depth = 0
    for piece in _TAG.split(html):
        if piece.startswith("<"):
            name = piece[1:].lstrip("/").split(None, 1)[0].rstrip(">").lower() if piece[1:] else ""
            if name in ("a", "code", "pre", "title", "style"):
                skip_depth += -1 if piece.startswith("</") else 1
            out.append(piece)
        elif skip_depth > 0:
            out.append(piece)
        else:
            out.append(_PHONE.sub(_tel, piece))
    return "".join(out)


# --- HTML → plain text ---------------------------------------------------------------------

_BLOCKS = {
    "p",
    "div",
    "ul",
    "ol",
    "li",
    "blockquote",
    "pre",
    "hr",
    "table",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "dl",
    "dt",
    "dd",
    "figure",
    "section",
    "article",
    "header",
    "footer",
    "aside",
    "nav",
    "details",
    "summary",
}


_BREAK = "\u2028"  # a <br>, kept through whitespace folding


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""


def _inline(element) -> str:
    """Text of inline content: links as `text (url)`, <br> as newline."""
    parts: list[str] = [element.text or ""]
    for child in element:
        tag = _local(child.tag)
        if tag == "br":
            parts.append(_BREAK)
        elif tag == "a":
            text = _inline(child).strip()
            href = child.get("href", "")
            target = re.sub(r"^(mailto|tel):", "", href)
            if href and target.replace(" ", "") not in (text.replace(" ", ""), ""):
                parts.append(f"{text} ({href})" if text else href)
            else:
                parts.append(text)
        elif tag == "img":
            parts.append(child.get("alt", ""))
        elif tag not in ("script", "style"):
            parts.append(_inline(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _lines(text: str, first: str = "", rest: str = "") -> str:
    """Whitespace folded; one line per <br>-separated line, never hard-wrapped."""
    lines = re.sub(r"[^\S\u2028]+", " ", text).strip().split(_BREAK)
    return "\n".join(
        ((first if n == 0 else rest) + line.strip()).rstrip() for n, line in enumerate(lines)
    )


def _blocks(element) -> list[str]:
    blocks: list[str] = []
    pending = [element.text or ""]

    def flush() -> None:
        text = "".join(pending).strip()
        if text:
            blocks.append(_lines(text))
        pending.clear()

    for child in element:
        tag = _local(child.tag)
        if tag not in _BLOCKS:
            if tag == "br":
                pending.append(_BREAK)
            elif tag not in ("script", "style", "head", "title"):
                pending.append(_inline(_Wrapper(child)))
            pending.append(child.tail or "")
            continue
        flush()
        blocks.extend(_block(child, tag))
        pending.append(child.tail or "")
    flush()
    return [b for b in blocks if b.strip()]


class _Wrapper:
    """Lets `_inline` treat one inline element (with its own tag) as content."""

    def __init__(self, element) -> None:
        self.text, self._children = "", [element]

    def __iter__(self):
        tail = self._children[0].tail
        self._children[0].tail = None
        try:
            yield from self._children
        finally:
            self._children[0].tail = tail


def _block(element, tag: str) -> list[str]:
    if tag in ("h1", "h2"):
        text = " ".join(_inline(element).split())
        return [f"{text}\n{('=' if tag == 'h1' else '-') * min(len(text), RULE_WIDTH)}"]
    if tag in ("h3", "h4", "h5", "h6"):
        return [" ".join(_inline(element).split())]
    if tag == "hr":
        return ["* * *"]
    if tag == "pre":
        return ["\n".join("    " + line for line in "".join(element.itertext()).splitlines())]
    if tag in ("ul", "ol"):
        items = []
        number = int(element.get("start", "1") or 1)
        for child in element:
            if _local(child.tag) != "li":
                continue
            marker = f"{number}. " if tag == "ol" else "* "
            number += 1
            inner = _blocks(child) or [""]
            pad = " " * len(marker)
            lines = "\n\n".join(inner).split("\n")
            items.append(
                "\n".join([marker + lines[0]] + [pad + ln if ln else "" for ln in lines[1:]])
            )
        return ["\n\n".join(items)]  # a blank line between items: easier to tell apart
    if tag == "blockquote":
        inner = _blocks(element)
        return ["\n".join("    " + ln if ln else "" for ln in "\n\n".join(inner).split("\n"))]
    return _blocks(element)


def html_to_text(html: str) -> str:
    """A readable plain-text version of sanitised HTML: one line per paragraph."""
    import tinyhtml5

    root = tinyhtml5.parse(html)
    body = next((e for e in root if _local(e.tag) == "body"), root)
    # Strip only blank lines: a body that opens with a quote keeps its indent.
    return "\n\n".join(_blocks(body)).strip("\n") + "\n"
