"""`bulletin check`'s accessibility warnings: what a writer can fix in the Markdown (issue 20)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bulletin.accessibility import accessibility_problems

# Markdown body → [(line, words the warning contains)]; line 1 is the body's first line.
CASES = [
    ("Hello,\n\nAll fine here: [ward surgery times](https://example.org/s).", []),
    ("![](https://example.org/map.png)", [(1, "no alt text")]),
    ("![Map of Penge ward](https://example.org/map.png)", []),
    ('<img src="https://example.org/a.png">', [(1, "no alt text")]),
    ('<img src="https://example.org/a.png" alt="">', [(1, "no alt text")]),
    ('<img src="https://example.org/a.png" alt="Penge library">', []),
    ("Text\n\n[Click here](https://example.org/a) to read it.", [(3, '"Click here"')]),
    ("See [here](https://example.org/a).", [(1, '"here"')]),
    ("[Read more…](https://example.org/a)", [(1, '"Read more…"')]),
    ("[**more**](https://example.org/a)", [(1, '"more"')]),
    ("Go to [https://example.org/a](https://example.org/a)", [(1, "bare web address")]),
    ("Go to <https://example.org/a>", [(1, "bare web address")]),
    ('<a href="https://example.org">click here</a>', [(1, '"click here"')]),
    ("Write to [the Safer Neighbourhoods team](mailto:snt@example.org)", []),
    ("## Section\n\n### Sub-section\n\n## Next", []),
    ("### Too deep", [(1, "heading level 3 follows level 1; use ##")]),
    ("## One\n\n#### Three", [(3, "heading level 4 follows level 2; use ###")]),
    ("# A second heading 1", []),
    (
        "PLEASE REPORT ALL HATE CRIME TO THE POLICE AS SOON AS YOU CAN.",
        [(1, "paragraph in capitals")],
    ),
    ("Report it\n\nCALL 999 IN AN EMERGENCY AND 101 OTHERWISE, ANY TIME", [(3, "capitals")]),
    ("- first item\n- AN ITEM ALL IN CAPITAL LETTERS HERE", [(2, "capitals")]),
    ("## WARD SURGERIES THIS MONTH", [(1, "heading in capitals")]),
    ("The MPS, NHS and TfL are working with the BTP on this.", []),
    ("CALL 999", []),  # too short to matter
    ("Dear {{ FIRST_NAME }}, thank you for all you do.", []),
    ("```\n![](x.png) [here](x) ALL OF THIS IS CODE AND FINE\n```", []),
]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_accessibility_rules(body, expected):
    found = accessibility_problems(body, "messages/m.md", first_line=1)
    assert len(found) == len(expected), [p.text for p in found]
    for problem, (line, words) in zip(found, expected, strict=True):
        assert problem.file == "messages/m.md" and problem.line == line
        assert problem.text.startswith("accessibility: ") and words in problem.text


def test_lines_count_from_the_top_of_the_file():
    (problem,) = accessibility_problems("Hi\n\n[here](https://example.org)", "m.md", first_line=9)
    assert problem.line == 11


def test_the_example_and_the_feature_test_message_have_no_warnings(workdir, cli):
    data = Path(__file__).parent / "data" / "every-feature.md"
    shutil.copy(data, workdir / "messages" / data.name)
    for name in ("eu-referendum", "every-feature"):
        result = cli("check", name)
        assert "warning" not in result.stderr, result.stderr


def test_check_warns_without_failing(workdir, cli):
    message = workdir / "messages" / "eu-referendum.md"
    text = message.read_text(encoding="utf-8")
    message.write_text(text + "\n[Click here](https://example.org/plan)\n", encoding="utf-8")
    line = len(text.splitlines()) + 2
    result = cli("check", "eu-referendum")  # exit 0: a warning does not stop a send
    assert "OK" in result.stdout
    assert result.stderr.splitlines() == [
        f'warning: messages/eu-referendum.md:{line}: accessibility: link text "Click here" '
        "does not say where the link goes; describe it, e.g. [ward surgery times](https://…)"
    ]


def test_check_warns_when_the_senders_name_is_not_the_headers(workdir, cli):
    """One name everywhere (issue 15, item 9): a different From name is pointed out."""
    message = workdir / "messages" / "eu-referendum.md"
    text = message.read_text(encoding="utf-8")
    message.write_text(
        text.replace(
            "from: bromley.neighbourhoods@example.org",
            'from: "Bromley Police <bromley.neighbourhoods@example.org>"',
        ),
        encoding="utf-8",
    )
    (warning,) = cli("check", "eu-referendum").stderr.splitlines()
    assert warning.startswith(
        "warning: messages/eu-referendum.md:3: the sender's name 'Bromley Police' is not the "
        "email header's 'Metropolitan Police Service, Bromley Borough'"
    )
