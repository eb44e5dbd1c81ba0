"""A running ``reserves serve`` with explicit tokens, and Debian's headless Chromium driven by
Playwright (never ``playwright install``: browser downloads are blocked here).

Every step's screenshot goes to ``test-artifacts/console/`` (CONSOLE_ARTIFACTS overrides it);
with CONSOLE_UPDATE_DOCS=1 (``make screenshots``) they also refresh the committed set under
``docs/console/`` that the README shows."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from tests.e2e import serve

CHROMIUM = Path(os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "console"
TTL_SECONDS = 3600


service = serve.service_fixture("console-serve", {"RESERVE_REQUEST_TTL": str(TTL_SECONDS)})


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Module-scoped on purpose: Playwright's sync API marks an event loop as running in this
    thread while it is open, which would break the asyncio tests that run after this module."""
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium. "
                    "The browser tests are never skipped.")
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield b
    b.close()


class Screens:
    """Saves each step's screenshot as a test artifact (and, on request, into docs/)."""

    def __init__(self, folder: Path, update_docs: bool) -> None:
        self.folder, self.update_docs = folder, update_docs
        folder.mkdir(parents=True, exist_ok=True)

    def shot(self, page: Page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), animations="disabled", caret="hide", full_page=True)
        assert path.stat().st_size > 1000, f"screenshot {name} is empty"
        if self.update_docs:
            DOCS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS / path.name)
        return path


@pytest.fixture(scope="session")
def screens() -> Screens:
    folder = Path(os.environ.get("CONSOLE_ARTIFACTS") or ROOT / "test-artifacts" / "console")
    return Screens(folder, os.environ.get("CONSOLE_UPDATE_DOCS") == "1")


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    """Browser contexts a test opens (one per manager), closed before the service stops so
    no live-update stream is left open."""
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()
