"""axe-core in headless Chromium: `assert_accessible(page)` for any page a test has loaded.

axe-core ships inside the `axe-playwright-python` wheel (no download). Every rule axe runs by
default is applied, best practice included, and any violation of any impact fails the test
with the rule, its help text and the offending elements (issue 20).
"""

from __future__ import annotations

# Rules axe would run anyway, named so the intent survives a change of axe's defaults.
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def violations(page) -> list[dict]:
    """axe-core's violations on the page as it is now (all rules on by default + best practice)."""
    from axe_playwright_python.sync_playwright import Axe

    options = {"resultTypes": ["violations"]}
    results = Axe().run(page, options=options)
    found = results.response["violations"]
    tagged = Axe().run(page, options={**options, "runOnly": {"type": "tag", "values": TAGS}})
    seen = {v["id"] for v in found}
    return found + [v for v in tagged.response["violations"] if v["id"] not in seen]


def describe(found: list[dict]) -> str:
    lines = []
    for violation in found:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"][:5]:
            lines.append(f"    {' '.join(map(str, node['target']))}: {node['html'][:120]}")
    return "\n".join(lines)


def assert_accessible(page) -> None:
    """Fail with a readable list when axe-core finds any violation on the page."""
    found = violations(page)
    assert not found, f"axe-core found {len(found)} violation(s):\n{describe(found)}"
