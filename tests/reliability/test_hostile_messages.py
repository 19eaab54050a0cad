"""Messages are data, not code: broken or hostile ones are refused or rendered literally.

The corpus (tests/data/messages) holds broken YAML, front matter that is a list, unknown keys,
YAML's Python tags and alias bombs, odd placeholder names, Jinja syntax errors and template
injection attempts (`{{ ''.__class__ }}`, `{% import os %}`, `{{ cycler.__init__.__globals__ }}`).
`bulletin check` must list each problem as FILE:LINE; whatever still renders (preview) must
show the text as written and never the result of evaluating it. Hypothesis then throws random
front matter and template-like bodies at the same code.
"""

from __future__ import annotations

import html
import re
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulletin.check import check_message
from bulletin.cli import app
from bulletin.config import load_settings
from bulletin.errors import InputError

FROM = "Bromley Police <bromley.neighbourhoods@example.org>"
CANARY = "canary-env-value-31c7"  # in the environment: must never reach a rendering
# What evaluating a template expression would have produced.
EVALUATED = re.compile(
    r"<class |<function |<module |<built-in|environ\(|__builtins__|root:x:0:0|"
    + CANARY
    + r"|\b49\b|Undefined|jinja2|Traceback"
)

# message → (exit code of `bulletin check`, [(line, words in that line's problem)])
CORPUS = {
    "bad-indentation": (1, [(3, "not valid YAML")]),
    "broken-yaml": (1, [(4, "not valid YAML")]),
    "front-matter-list": (1, [(2, "must be 'key: value' lines")]),
    "front-matter-scalar": (1, [(2, "must be 'key: value' lines")]),
    "header-injection-front-matter": (
        1,
        [
            (2, "subject must be on one line"),
            (3, "from must be on one line"),
            (4, "reply_to must be on one line"),
            (5, "category must be one line"),
            (6, "reference must be one line"),
        ],
    ),
    "jinja-syntax-errors": (
        1,
        [(4, "template tags are not allowed"), (6, "template tags"), (5, "never closed")],
    ),
    "no-front-matter": (1, [(1, "no front matter")]),
    "not-utf8": (1, [(None, "not UTF-8 text")]),
    "odd-placeholders": (
        1,
        [(2, "'{{ first-name }}' is not a placeholder")]
        + [(4, "is not a placeholder")] * 5
        + [(5, "is not a placeholder")] * 5,
    ),
    "python-tag": (1, [(2, "could not determine a constructor")]),
    "raw-html": (0, []),
    "ssti-class": (1, [(2, "is not a placeholder"), (4, "is not a placeholder")]),
    "ssti-globals": (
        1,
        [(4, "is not a placeholder"), (5, "is not a placeholder")]
        + [(5, f"no contact column '{c}'") for c in ("config", "self", "request", "namespace")],
    ),
    "ssti-import": (1, [(4, "'{% import os %}'"), (5, "include"), (6, "extends")]),
    "surrogate-escape": (1, [(2, "an escape such as \\ud800 is not a character")]),
    "unknown-keys": (
        1,
        [(2, "unknown front matter key 'subjct'"), (4, "'bcc'"), (5, "'headers'")],
    ),
    "yaml-bomb": (
        1,
        [(line, "unknown front matter key") for line in (3, 4, 5, 6)]
        + [(7, "audience: ward must list allowed values as text")],
    ),
}
LINE = re.compile(r"^messages/(?P<name>[\w-]+)\.md(?::(?P<line>\d+))?: (?P<text>.*)$")


@pytest.fixture
def corpus(workdir, data_dir, monkeypatch):
    """The corpus copied into messages/, with a default sender and a canary in the environment."""
    monkeypatch.setenv("BULLETIN_FROM", FROM)
    monkeypatch.setenv("CANARY", CANARY)
    for path in (data_dir / "messages").iterdir():
        shutil.copyfile(path, workdir / "messages" / (path.name.split(".")[0] + ".md"))
    return workdir


def test_the_corpus_covers_every_file(data_dir):
    assert {p.name.split(".")[0] for p in (data_dir / "messages").iterdir()} == set(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_check_lists_each_problem_with_its_line(corpus, cli, name):
    code, expected = CORPUS[name]
    result = cli("check", name, expect=code)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    if code == 0:
        return
    assert lines[-1].startswith("Error: ")
    found = []
    for line in lines[:-1]:
        match = LINE.match(line)
        assert match and match.group("name") == name, line
        found.append((int(match.group("line")), match.group("text")))
    if not found:  # one problem with the whole file: on the Error line itself
        found = [(None, lines[-1])]
    assert len(found) == len(expected), lines
    for want_line, words in expected:  # each expected problem matches one reported problem
        match = next((f for f in found if f[0] == want_line and words in f[1]), None)
        assert match, (want_line, words, found)
        found.remove(match)


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.parametrize("format", ["html", "text", "eml"])
def test_whatever_renders_shows_the_text_never_its_evaluation(corpus, cli, name, format):
    result = cli.runner.invoke(app, ["preview", name, "-f", format], catch_exceptions=False)
    assert "Traceback" not in result.stderr
    if result.exit_code != 0:  # refused: nothing was rendered
        assert result.exit_code == 1 and result.stdout == ""
        return
    out = result.stdout
    if format == "eml":  # the clock's and the host's digits are not an evaluation (…16:49…)
        out = re.sub(r"(?m)^(Date|Message-ID): .*$", "", out)
    assert not EVALUATED.search(out), EVALUATED.search(out).group(0)
    if name.startswith("ssti") or name == "odd-placeholders":
        shown = html.unescape(out) if format == "html" else out
        assert "__class__" in shown or "{%" in shown or "{{" in shown  # the text as written
    if format == "html":
        assert not re.search(r"<script|<iframe|<form|\son\w+=|javascript:", out, re.IGNORECASE)


def test_raw_html_in_the_body_is_sanitised_in_the_email(corpus, cli):
    out = cli("preview", "raw-html", "-f", "html").stdout
    assert "<script" not in out and "onerror" not in out and "javascript:" not in out
    assert "<iframe" not in out and "<form" not in out and "<input" not in out
    assert ">link</a>" in out or ">link<" in out  # the link text survives, harmlessly


front_values = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=10), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
)
template_text = st.lists(
    st.sampled_from([*"{}%#'\"_.()[]|~*=- \nabcxyz", "first_name", "__class__", "7*7"]),
    max_size=40,
).map("".join)


def yaml_scalar(value) -> str:
    import json

    return json.dumps(value)  # JSON is YAML: quotes and escapes come out right


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.dictionaries(
        st.sampled_from(["subject", "from", "reply_to", "preheader", "audience", "contacts"])
        | st.text(alphabet="abcdefghij_", min_size=1, max_size=8),
        front_values,
        max_size=5,
    ),
    subject=template_text,
    body=template_text,
)
def test_random_messages_are_refused_or_rendered_never_crash(tmp_path_factory, keys, subject, body):
    from bulletin.workdir import init_workdir

    folder = tmp_path_factory.mktemp("msg")
    if not (folder / "messages").exists():
        init_workdir(folder, example=True)
    front = "".join(f"{yaml_scalar(k)}: {yaml_scalar(v)}\n" for k, v in keys.items())
    front = f"subject: {yaml_scalar(subject)}\n" + front if "subject" not in keys else front
    path = folder / "messages" / "random.md"
    path.write_text(f"---\n{front}---\n{body}\n", encoding="utf-8")
    config = load_settings(folder, environ={"BULLETIN_FROM": FROM, "CANARY": CANARY})
    try:
        checked = check_message("random", config)
    except InputError:
        return  # refused with a sentence, as the CLI shows it
    for problem in checked.problems:
        assert str(problem).startswith("messages/random.md")
    if checked.compiled is None:
        return
    contact = checked.audience[0] if checked.audience else None
    try:
        rendered = checked.compiled.render(contact, "https://example.org/unsubscribe?t=x")
    except InputError:
        assert checked.problems  # only a message `check` already refused
        return
    # "49" is evidence of `{{ 7*7 }}` only where the input did not hold it already (issue 12:
    # this used to strip every "49" first, so the check could never fire).
    given = body + subject + "".join(map(str, keys.values()))
    for text in (rendered.subject, rendered.html, rendered.text):
        found = EVALUATED.findall(text)
        assert not [f for f in found if f != "49" or "49" not in given]


def test_the_49_check_would_catch_an_evaluated_expression():
    """Issue 12: the check above must be able to fire on `{{ 7*7 }}` evaluated."""
    assert EVALUATED.findall("Dear 49,") == ["49"]
