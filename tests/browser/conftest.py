"""Browser tests of the admin console: Python Playwright driving Debian's Chromium against the real server.

Chromium and Playwright are local components: without them the tests skip on a developer machine and fail in CI
(``tests.conftest.require``). Every test gets a fresh browser context, and fails on any browser console error or
uncaught page exception unless it declared that exact message expected (a deliberate 401, a simulated 404).
Screenshots go to ``test-artifacts/screenshots/`` (gitignored); with ``GPTLOAD_UPDATE_DOCS_SCREENSHOTS=1`` they
also refresh the committed ``docs/screenshots/<page>.png`` used by the README.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require
from tests.e2e.conftest import AUTH_KEY, Server, start_server
from tests.fakes.fake_gemini import FakeGemini

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_DOCS = os.environ.get("GPTLOAD_UPDATE_DOCS_SCREENSHOTS", "") == "1"
DESKTOP = {"width": 1280, "height": 860}


@pytest.fixture(scope="session")
def playwright_api():
    require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing (apt-get install chromium); .ci/run installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "Python Playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright_api):
    b = playwright_api.chromium.launch(
        headless=True,
        executable_path=CHROMIUM,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )
    yield b
    b.close()


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(n_keys=0) as f:
        yield f


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    """One server for the short tests; the journey test starts its own so its counters start at zero."""
    srv = start_server(tmp_path_factory.mktemp("browser"))
    yield srv
    srv.stop()


@dataclass
class Console:
    """Browser console errors and page exceptions seen during a test."""

    errors: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect(self, fragment: str) -> None:
        """Declare console errors containing ``fragment`` part of the test (e.g. a deliberate 401)."""
        self.expected.append(fragment)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(f in e for f in self.expected)]


@dataclass
class UI:
    page: object
    server: Server
    console: Console

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.server.url}/#/{route}" if route else f"{self.server.url}/")

    def login(self) -> None:
        from playwright.sync_api import expect

        self.open("login")
        self.page.get_by_label("Admin key (AUTH_KEY)", exact=True).fill(AUTH_KEY)
        self.page.get_by_label("Admin key (AUTH_KEY)", exact=True).press("Enter")
        expect(self.page.get_by_role("heading", name="Dashboard")).to_be_visible()

    def new_group_dialog(self, name: str) -> object:
        """Logged in already: open the groups page's "New group" dialog, type ``name``, return the dialog."""
        self.open("groups")
        self.page.get_by_role("button", name="New group").click()
        dialog = self.page.get_by_role("dialog", name="New group")
        dialog.get_by_label("Name", exact=True).fill(name)
        return dialog

    def shot(self, name: str, *, docs: bool = True) -> Path:
        """Screenshot the page to the test artifacts (and, when refreshing docs, to docs/screenshots)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        # Hide toasts through the CSSOM: the console's Content-Security-Policy refuses injected <style> (which is
        # what screenshot(style=...) adds), and the test must not weaken it.
        toasts = "display => document.querySelectorAll('.toasts').forEach((el) => { el.style.display = display; })"
        self.page.evaluate(toasts, "none")
        self.page.screenshot(path=str(path), full_page=True, animations="disabled", caret="hide")
        self.page.evaluate(toasts, "")
        if UPDATE_DOCS and docs:
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / f"{name}.png")
        return path


def open_ui(browser, server: Server, viewport: dict | None = None) -> tuple[object, UI]:
    context = browser.new_context(viewport=viewport or DESKTOP, accept_downloads=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    console = Console()
    page.on("console", lambda m: m.type == "error" and console.errors.append(f"console: {m.text} @ {m.location}"))
    page.on("pageerror", lambda e: console.errors.append(f"pageerror: {e}"))
    return context, UI(page, server, console)


@pytest.fixture
def make_ui(browser):
    """make_ui(server, viewport=None) -> UI in a fresh context; fails the test on unexpected console errors."""
    opened: list[tuple[object, UI]] = []

    def make(server: Server, viewport: dict | None = None) -> UI:
        context, ui = open_ui(browser, server, viewport)
        opened.append((context, ui))
        return ui

    yield make
    problems = []
    for context, ui in opened:
        problems += ui.console.unexpected()
        context.close()
    assert not problems, "browser console errors:\n" + "\n".join(problems)


@pytest.fixture
def ui(make_ui, server) -> UI:
    return make_ui(server)
