"""Headless Chromium for tests, driven by Playwright (Debian's `chromium`; no browser download).

Use the `browser` fixture (session-wide) or `page` (a fresh page per test)::

    def test_email_fits_a_phone(page, tmp_path):
        page.set_viewport_size({"width": 375, "height": 800})
        page.goto(path.as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") <= 375

Screenshots go to `tests/artefacts/` (ignored by git) through `save_screenshot(page, name)`.
Chromium is found at BULLETIN_CHROMIUM or /usr/bin/chromium. When it is missing the tests are
skipped with a loud reason, except under CI (CI=true), where a missing browser is a failure:
`.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ARTEFACTS = Path(__file__).parent / "artefacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    candidate = os.environ.get("BULLETIN_CHROMIUM") or shutil.which("chromium") or None
    if candidate is None and Path("/usr/bin/chromium").exists():
        candidate = "/usr/bin/chromium"
    return candidate


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"browser tests cannot run in CI: {reason}")
    pytest.skip(f"BROWSER TESTS NOT RUN: {reason} (apt-get install chromium)")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole session."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    executable = chromium_path()
    if executable is None:
        _unavailable("no Chromium found at /usr/bin/chromium")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser):
    """A fresh page (its own context) that records console errors in `page.console_errors`."""
    context = browser.new_context()
    new_page = context.new_page()
    errors: list[str] = []
    new_page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    new_page.on("pageerror", lambda error: errors.append(str(error)))
    new_page.console_errors = errors
    try:
        yield new_page
    finally:
        context.close()


def save_screenshot(page, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG to tests/artefacts/NAME.png for a person to look at."""
    ARTEFACTS.mkdir(exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
