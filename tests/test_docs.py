"""Docs are tested (sqlite-utils style): every command has help and an example, and is in README."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main

from bulletin.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"


def walk(command, path: tuple[str, ...] = ()):
    """Every (path, command) below `command`; groups included."""
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield (*path, name), sub
        yield from walk(sub, (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))
LEAVES = [(path, c) for path, c in COMMANDS if not hasattr(c, "commands")]


def ids(items):
    return [" ".join(path) for path, _ in items]


def test_the_foundation_commands_exist():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"init", "new", "check", "contacts check", "contacts list", "preview", "print"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=ids(COMMANDS))
def test_every_command_has_help_text(path, command):
    assert (command.help or "").strip(), f"bulletin {' '.join(path)} has no help text"


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=ids(LEAVES))
def test_every_command_has_an_example_of_itself(path, command):
    examples = [ln.strip() for ln in command.help.splitlines() if ln.strip().startswith("Example:")]
    assert len(examples) == 1, command.help
    assert examples[0].startswith(f"Example: bulletin {' '.join(path)}")


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=ids(COMMANDS))
def test_help_runs(cli, path, command):
    result = cli(*path, "--help")
    assert "Usage:" in result.stdout
    first_line = " ".join(command.help.strip().splitlines()[0].split())
    assert first_line in " ".join(result.stdout.split())


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=ids(COMMANDS))
def test_every_command_is_in_the_readme(path, command):
    readme = README.read_text(encoding="utf-8")
    assert f"bulletin {' '.join(path)}" in readme, f"bulletin {' '.join(path)} is not in README.md"


# --- the README's commands run as documented (issue 16) ---------------------------------------

# Commands shown in README.md that this test does not run, and why. Everything else runs.
NOT_RUN = {
    "bulletin events serve": "starts a server and waits for requests",
    "bulletin events serve --port 9000": "starts a server and waits for requests",
    "bulletin events serve --workers 2": "starts a server and waits for requests",
    "bulletin approve eu-referendum --request commander@example.org": (
        "needs BULLETIN_SECRET and BULLETIN_PUBLIC_URL (tests/test_approval.py runs it)"
    ),
    "bulletin preview street-safety-july --format html --open": "opens a desktop viewer",
}
# Commands that ask before sending: the test has no terminal, so it answers with --yes.
ASKS = {"bulletin send street-safety-july"}
SCAFFOLD_BODY = 'Dear {{ first_name or "Co-ordinator" }},\n\nPlease lock doors and windows.\n'


def readme_commands() -> list[str]:
    """Every `bulletin …` command in README.md's sh blocks, in order, comments removed."""
    import re

    found = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S):
        for line in block.splitlines():
            for part in line.split("  #", 1)[0].split("&&"):
                if part.strip().startswith("bulletin "):
                    found.append(part.strip())
    return found


def edit_scaffold(path: Path) -> None:
    """What a person does after `bulletin new`: write a preheader and a body."""
    text = path.read_text(encoding="utf-8")
    front, _, _ = text.partition("\n---\n")
    front = front.replace(
        "preheader: One line shown in the inbox beside the subject",
        "preheader: Summer street safety",
    )
    path.write_text(f"{front}\n---\n{SCAFFOLD_BODY}", encoding="utf-8")


def test_the_readme_shows_commands():
    commands = readme_commands()
    assert "bulletin send eu-referendum --yes" in commands
    assert set(NOT_RUN) <= set(commands), "NOT_RUN lists a command the README no longer shows"
    assert set(commands) >= ASKS


def test_every_readme_command_runs_in_a_fresh_working_folder(workdir, cli):
    import shlex

    (workdir / "sendgrid-events.json").write_text("[]\n", encoding="utf-8")
    for line in readme_commands():
        if line in NOT_RUN:
            continue
        args = shlex.split(line)[1:]
        if line in ASKS:
            args.append("--yes")
        result = cli(*args)  # fails with the output unless it exits 0
        assert "Traceback" not in result.stderr, line
        if args[0] == "new":
            edit_scaffold(workdir / "messages" / f"{args[1]}.md")


def test_readme_and_env_example_name_every_setting():
    import re

    from bulletin.workdir import ENV_EXAMPLE

    config = (Path(__file__).resolve().parent.parent / "bulletin" / "config.py").read_text()
    from bulletin.config import TEST_SUITE_KEYS

    keys = set(re.findall(r'"((?:BULLETIN|SMTP|SENDGRID)_[A-Z_]+)"', config)) | {"BULLETIN_DEBUG"}
    keys -= set(TEST_SUITE_KEYS)
    readme = README.read_text(encoding="utf-8")
    assert len(keys) > 20
    for key in sorted(keys):
        assert f"# {key}=" in ENV_EXAMPLE or f"\n{key}=" in ENV_EXAMPLE, key
        assert f"`{key}`" in readme, key


def test_readme_speaks_to_users_not_to_the_project():
    readme = README.read_text(encoding="utf-8")
    for internal in ("DESIGN.md", "Issue 3", "issue 3"):
        assert internal not in readme
    for doc in ("docs/reliability.md", "docs/performance.md"):
        assert doc in readme and (README.parent / doc).is_file()


def test_the_front_matter_shown_is_the_example_letters():
    readme = README.read_text(encoding="utf-8")
    shown = readme.split("```markdown\n", 1)[1].split("\n---\n", 1)[0]
    letter = (README.parent / "messages" / "eu-referendum.md").read_text(encoding="utf-8")
    assert letter.startswith(shown + "\n---\n")
