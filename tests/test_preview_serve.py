"""`bulletin preview MESSAGE --serve`: a real uvicorn server on 127.0.0.1, driven by a real
headless Chromium (tests/browser.py). Screenshots go to tests/artefacts/ for a person to see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from browser import save_screenshot
from servers import free_port

from bulletin.web.preview import make_server

WAIT = 15_000  # ms Playwright may wait for the page to catch up (a bound, not a measurement)


@pytest.fixture
def live(workdir):
    server = make_server("eu-referendum", workdir, 0).start()
    yield server
    server.stop()


def message_file(workdir: Path) -> Path:
    return workdir / "messages" / "eu-referendum.md"


def open_page(page, live, width: int = 1400, height: int = 1000):
    from playwright.sync_api import expect

    page.set_viewport_size({"width": width, "height": height})
    page.goto(live.url + "/")
    expect(page.locator("#subject")).to_contain_text("we stand together", timeout=WAIT)
    return expect


def frame_text(page, which: str):
    return page.frame_locator(f"#{which}").locator("body")


def test_the_page_shows_everything_with_no_console_errors(page, live):
    expect = open_page(page, live)
    expect(page.locator("#sender")).to_have_text(
        "Metropolitan Police Service, Bromley Borough <bromley.neighbourhoods@example.org>"
    )
    expect(page.locator("#preheader")).to_contain_text("After the EU Referendum")
    expect(page.locator("#text")).to_contain_text("Dear Margaret,")
    expect(page.locator("#no-problems")).to_be_visible()
    expect(page.locator("#audience")).to_contain_text("contact(s) in the audience")
    for which in ("desktop", "phone"):
        assert page.locator(f"#{which}").get_attribute("sandbox") == ""
        expect(frame_text(page, which)).to_contain_text("Dear Margaret", timeout=WAIT)
    assert page.locator("#print-link").get_attribute("href").startswith("/print.pdf?contact=")
    assert page.console_errors == []
    save_screenshot(page, "preview-desktop")
    open_page(page, live, 375, 800)
    for which in ("desktop", "phone"):
        expect(frame_text(page, which)).to_contain_text("Dear Margaret", timeout=WAIT)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    save_screenshot(page, "preview-phone")
    page.locator("#phone").scroll_into_view_if_needed()  # frames below the fold are painted
    save_screenshot(page, "preview-phone-email", full_page=False)  # only when scrolled to
    assert page.console_errors == []


def test_the_picker_changes_the_greeting_in_both_iframes(page, live):
    expect = open_page(page, live)
    page.fill("#search", "o'neill")
    page.locator("#results button", has_text="David O'Neill").click()
    for which in ("desktop", "phone"):
        expect(frame_text(page, which)).to_contain_text("Dear David", timeout=WAIT)
    expect(page.locator("#text")).to_contain_text("Dear David,")
    expect(page.locator("#who")).to_contain_text("david.oneill@example.com")
    page.fill("#search", "penge")
    expect(page.locator("#results button").first).to_be_visible()
    assert page.console_errors == []


def test_saving_the_message_updates_the_page_by_itself(page, live, workdir):
    expect = open_page(page, live)
    path = message_file(workdir)
    path.write_text(
        path.read_text()
        .replace("we stand together", "we stand united")
        .replace("I’m writing to you", "I am writing to you again")
    )
    expect(page.locator("#subject")).to_contain_text("we stand united", timeout=WAIT)
    for which in ("desktop", "phone"):
        expect(frame_text(page, which)).to_contain_text("writing to you again", timeout=WAIT)
    expect(page.locator("#text")).to_contain_text("writing to you again")
    assert page.console_errors == []


def test_a_broken_file_shows_its_error_and_keeps_the_last_render(page, live, workdir):
    expect = open_page(page, live)
    path = message_file(workdir)
    good = path.read_text()
    path.write_text(good.replace("subject:", "subject: [unclosed", 1))
    expect(page.locator("#broken")).to_be_visible(timeout=WAIT)
    expect(page.locator("#problems")).to_contain_text("eu-referendum.md")
    expect(page.locator("#subject")).to_contain_text("we stand together")  # the last good one
    expect(frame_text(page, "desktop")).to_contain_text("Dear Margaret")
    path.write_text(good.replace("{{ first_name", "{{ nickname", 1))  # parses; one problem
    expect(page.locator("#broken")).to_be_hidden(timeout=WAIT)
    expect(page.locator("#problems")).to_contain_text("no contact column 'nickname'")
    assert page.console_errors == []


def test_a_broken_template_shows_its_error(page, live, workdir):
    expect = open_page(page, live)
    layout = workdir / "templates" / "email.html"
    layout.write_text(layout.read_text() + "{% if %}")
    expect(page.locator("#broken")).to_be_visible(timeout=WAIT)
    expect(page.locator("#problems")).to_contain_text("templates/email.html")
    expect(frame_text(page, "phone")).to_contain_text("Dear Margaret")


def test_the_phone_iframe_has_no_horizontal_scroll(page, live):
    expect = open_page(page, live)
    expect(frame_text(page, "phone")).to_contain_text("Dear Margaret", timeout=WAIT)
    frame = next(f for f in page.frames if f.url.startswith(live.url + "/email"))
    phone = page.locator("#phone").element_handle().content_frame()
    width, client = phone.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert client <= 375 and width <= client, (width, client)
    assert frame is not None


def test_a_hostile_contact_is_shown_as_text(page, live, workdir):
    expect = open_page(page, live)
    with (workdir / "contacts" / "coordinators.csv").open("a", encoding="utf-8") as handle:
        handle.write(
            'evil@example.org,"<img src=x onerror=alert(1)>",Evil,Penge and Cator,'
            "coordinator,x,,,\n"
        )
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.fill("#search", "evil")
    page.locator("#results button", has_text="<img src=x").click()
    expect(page.locator("#who")).to_contain_text("<img src=x onerror=alert(1)>", timeout=WAIT)
    expect(frame_text(page, "desktop")).to_contain_text("Dear <img src=x", timeout=WAIT)
    assert dialogs == [] and page.console_errors == []


# --- without a browser ---------------------------------------------------------------------


def test_headers_methods_and_hosts(live):
    page = requests.get(live.url + "/", timeout=10)
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert "http" not in page.text.replace("http-equiv", "")  # nothing remote on the page
    email = requests.get(live.url + "/email", timeout=10)
    assert "sandbox" in email.headers["Content-Security-Policy"]
    assert requests.post(live.url + "/state", timeout=10).status_code == 405
    assert (
        requests.get(live.url + "/", headers={"Host": "evil.example"}, timeout=10).status_code
        == 400
    )
    assert requests.get(live.url + "/static/../cli.py", timeout=10).status_code == 404


def test_the_contact_search_is_done_by_the_server(workdir):
    rows = "".join(
        f"person{n:05d}@example.org,Person{n},Surname,Ward {n % 17},coordinator,S,,,\n"
        for n in range(10_000)
    )
    (workdir / "contacts" / "many.csv").write_text(
        "email,first_name,last_name,ward,role,scheme,phone,address,postcode\n" + rows
    )
    server = make_server("eu-referendum", workdir, 0, watch=False).start()
    try:
        found = requests.get(
            server.url + "/contacts", params={"q": "PERSON0004"}, timeout=30
        ).json()
        everyone = requests.get(server.url + "/contacts", params={"q": "ward"}, timeout=30).json()
        state = requests.get(server.url + "/state", timeout=30).json()
        pdf = requests.get(server.url + "/print.pdf", timeout=60)
    finally:
        server.stop()
    assert found["total"] == 10  # person00040 … person00049
    assert {c["email"] for c in found["contacts"]} == {
        f"person{n:05d}@example.org" for n in range(40, 50)
    }
    assert everyone["total"] >= 10_000 and len(everyone["contacts"]) == 20
    assert state["audience"] >= 10_000
    assert pdf.headers["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")


def test_cli_serves_on_loopback_and_stops_cleanly(workdir):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulletin",
            "preview",
            "eu-referendum",
            "--serve",
            "--no-open",
            "--port",
            str(port),
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        assert line.startswith(f"Previewing eu-referendum at http://127.0.0.1:{port}/"), line
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
