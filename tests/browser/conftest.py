"""A real headless Chromium (Debian's `chromium`, which `make system-deps` installs; the
Playwright driver from PyPI, with no browser download) against the real dev server.
Every page's screenshot lands in the test's output folder; a page that logs a console
error or requests any host other than the server fails its test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import truncate_all
from tests.e2e.conftest import DevServerProcess, start_dev_server

ADMIN_SECRET = "abx_browser_admin_" + "a" * 24
CHROMIUM = os.environ.get("ABAXUS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("ABAXUS_SCREENSHOTS", "test-output/screenshots"))
# Chromium on a machine without network: no background connections, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@dataclass
class Watched:
    """A page whose console errors and outside requests are collected."""

    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.outside == [], self.outside


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, database_url: str
) -> Iterator[DevServerProcess]:
    truncate_all(database_url)  # a clean database for the module; the server then makes its key
    server = start_dev_server(
        database_url,
        tmp_path_factory.mktemp("console"),
        ABAXUS_BOOTSTRAP_KEY=ADMIN_SECRET,
        ABAXUS_DEV_TICKS="false",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def watched(browser: Browser, console_server: DevServerProcess) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    seen = Watched(page, console_server.base_url)
    page.on(
        "console",
        lambda message: seen.errors.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: seen.errors.append(str(error)))

    def request(event: Any) -> None:
        if not event.url.startswith(console_server.base_url) and not event.url.startswith("data:"):
            seen.outside.append(event.url)

    page.on("request", request)
    yield seen
    context.close()


def api(base_url: str, secret: str = ADMIN_SECRET) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {secret}"
    session.base_url = base_url  # type: ignore[attr-defined]
    return session


def log_in(seen: Watched, secret: str) -> None:
    seen.page.goto(seen.base_url + "/dashboard")
    seen.page.get_by_label("API key").fill(secret)
    seen.page.get_by_role("button", name="Log in").click()
    seen.page.wait_for_selector("h1:has-text('Overview')")
