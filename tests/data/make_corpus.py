# ruff: noqa: E501 (the corpus is data: one line per file keeps it readable)
"""Rebuild the bad-input corpus in this folder: `python tests/data/make_corpus.py`.

Each file is one kind of input a spreadsheet, a text editor or an attacker could hand to
bulletin. tests/reliability/test_hostile_contacts.py and test_hostile_messages.py say what
bulletin must do with each (load it, or report FILE:LINE problems; never crash or evaluate).
Fictional data only, on example.org / example.com / example.net.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = "email,first_name,last_name,ward\n"

CONTACTS: dict[str, bytes] = {
    "random-bytes.csv": random.Random(8).randbytes(2048),
    "utf16-with-bom.csv": (HEADER + "ada.okafor@example.org,Ada,Okafor,Penge\n").encode("utf-16"),
    "shift-jis.csv": (HEADER + "kenji@example.org,健二,山田,Penge\n").encode("shift_jis"),
    "windows-1252.csv": (
        HEADER + "zoe@example.org,Zoë,O’Brien,Crystal Palace\nleo@example.com,Léo,Müller,£5 ward\n"
    ).encode("cp1252"),
    "missing-header.csv": b"ada.okafor@example.org,Ada,Okafor,Penge\nbo@example.org,Bo,Li,Penge\n",
    "header-only.csv": HEADER.encode(),
    "empty.csv": b"",
    "blank-lines-only.csv": b"\n\r\n  \n,,,\n",
    "duplicate-headers.csv": b"Email,E-mail,first_name\nada@example.org,ada@example.org,Ada\n",
    "formulas.csv": (
        HEADER
        + '=HYPERLINK("http://example.com/x","click")@example.org,=1+2,+SUM(A1:A9),-2+3\n'
        + 'formula.one@example.org,"=HYPERLINK(""http://example.com"",""x"")",@SUM(1),=cmd|\' /C calc\'!A0\n'
    ).encode(),
    "nul-bytes.csv": (
        HEADER + "ada@example.org,A\x00da,Okafor,Penge\nbo@example.org,Bo,Li,Penge\n"
    ).encode(),
    "rtl-and-combining.csv": (
        HEADER
        + "rtl@example.org,\u202eevil\u202c,فاطمة,שלום\n"
        + "zalgo@example.org,Z\u0337\u0322a\u0338l\u0335g\u0336o\u0338,Cafe\u0301,Penge\n"
    ).encode(),
    "emoji.csv": (HEADER + "emoji@example.org,🙂 Sam,👮‍♀️,🏳️‍🌈 Penge\n").encode(),
    "long-addresses.csv": (
        HEADER
        + f"{'a' * 64}@example.org,Longest,Local,Penge\n"
        + f"{'b' * 65}@example.org,Too,Long,Penge\n"
        + f"c@{'d' * 63}.{'e' * 63}.{'f' * 63}.{'g' * 50}.example.org,Too,Long,Penge\n"
    ).encode(),
    "idn-domains.csv": (
        HEADER + "volunteer@bücher.example.org,Idn,Domain,Penge\nmüller@example.org,Ü,Local,Penge\n"
    ).encode(),
    "line-breaks-in-names.csv": (
        HEADER
        + 'quoted@example.org,"Ann\nBcc: evil@example.com",Smith,Penge\n'
        + "ls@example.org,Ann\u2028Bcc: evil@example.com,Smith,Penge\n"
        + "nel@example.org,Ann\x85Bcc: evil@example.com,Smith,Penge\n"
        + "vt@example.org,Ann\x0bBcc: evil@example.com,Smith,Penge\n"
        + "after@example.org,After,Them,Penge\n"
    ).encode(),
    "header-injection-address.csv": (
        HEADER + '"ada@example.org\r\nBcc: evil@example.com",Ada,Okafor,Penge\n'
        "ada@example.org>, evil@example.com,Ada,Okafor,Penge\n"
        '"Evil <evil@example.com>",Ada,Okafor,Penge\n'
    ).encode(),
    "unterminated-quote.csv": (
        HEADER + 'ada@example.org,"Ada,Okafor,Penge\nbo@example.org,Bo,Li,Penge\n'
    ).encode(),
    "ragged-rows.csv": (
        HEADER + "ada@example.org,Ada,Okafor,Penge,extra,more\nbo@example.org\n"
    ).encode(),
    "html-in-fields.csv": (
        "email,first_name,last_name,ward,website\n"
        + 'xss@example.org,<script>alert(1)</script>,"""><img src=x onerror=alert(1)>",'
        + "</title><script>alert(2)</script>,javascript:alert(3)\n"
    ).encode(),
}

MESSAGES: dict[str, bytes] = {
    "broken-yaml.md": b'---\nsubject: "never closed\nfrom: Bromley Police <police@example.org>\n---\nHello\n',
    "bad-indentation.md": b"---\nsubject: Hello\n  from: x\n bad: [\n---\nHello\n",
    "front-matter-list.md": b"---\n- subject\n- Hello\n---\nHello\n",
    "front-matter-scalar.md": b"---\njust some text\n---\nHello\n",
    "no-front-matter.md": b"Hello {{ first_name }}, no front matter at all.\n",
    "unknown-keys.md": b"---\nsubjct: Typo\nsubject: Hello\nbcc: evil@example.com\nheaders: {Bcc: evil@example.com}\n---\nHello\n",
    "python-tag.md": b'---\nsubject: !!python/object/apply:os.system ["echo pwned"]\n---\nHello\n',
    "yaml-bomb.md": (
        b"---\nsubject: Hello\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
        b"audience: {ward: *d}\n---\nHello\n"
    ),
    "not-utf8.md.latin1": "---\nsubject: Caf\xe9\n---\nBonjour\n".encode("latin-1"),
    "odd-placeholders.md": (
        "---\nsubject: Hello {{ first-name }}\n---\n"
        "{{ 1st }} {{ first_name|upper }} {{ first_name() }} {{ }} {{ first_name or missing }}\n"
        "{{ émoji }} {{ first_name.__len__ }} {{ first_name[0] }} {{ 'a' ~ 'b' }} {{ 7*7 }}\n"
    ).encode(),
    "jinja-syntax-errors.md": b"---\nsubject: Hello\n---\n{% if %}\n{{ unclosed\n{% endfor %}\n{# comment\n",
    "ssti-class.md": b"---\nsubject: \"{{ ''.__class__ }}\"\n---\n{{ ''.__class__.__mro__[1].__subclasses__() }}\n",
    "ssti-import.md": b"---\nsubject: Hello\n---\n{% import os %}\n{% include '/etc/passwd' %}\n{% extends 'email.html' %}\n",
    "ssti-globals.md": (
        b"---\nsubject: Hello\n---\n{{ cycler.__init__.__globals__.os.environ }}\n"
        b"{{ lipsum.__globals__ }} {{ config }} {{ self }} {{ request }} {{ namespace }}\n"
    ),
    "raw-html.md": (
        b"---\nsubject: Hello\n---\n<script>alert(1)</script>\n\n"
        b'<a href="javascript:alert(2)">link</a> <img src=x onerror="alert(3)">\n\n'
        b'<iframe src="https://example.com"></iframe><form action="https://example.com"><input></form>\n\n'
        b"<style>body{display:none}</style>[md link](javascript:alert(4))\n"
    ),
    "surrogate-escape.md": b'---\nsubject: "Hello \\ud800"\nfrom: Bromley Police <police@example.org>\n---\nHello\n',
    "header-injection-front-matter.md": (
        b'---\nsubject: "Hello\\r\\nBcc: evil@example.com"\n'
        b'from: "Police <police@example.org>\\u2028Bcc: evil@example.com"\n'
        b'reply_to: "x@example.org\\nBcc: evil@example.com"\n'
        b'category: "news\\rBcc: evil@example.com"\nreference: "BR\\x85Bcc: evil@example.com"\n---\nHello\n'
    ),
}


def main() -> None:
    for folder, files in (("contacts", CONTACTS), ("messages", MESSAGES)):
        (HERE / folder).mkdir(exist_ok=True)
        for name, data in files.items():
            (HERE / folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
