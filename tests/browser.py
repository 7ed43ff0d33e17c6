"""Headless Chromium for page tests (Playwright driving the system's /usr/bin/chromium, no network)."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_browser() -> None:
    """Skip locally where Chromium or Playwright is missing; in CI their absence is a failure."""
    missing = None
    if shutil.which(CHROMIUM) is None:
        missing = f"{CHROMIUM} not found"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright (python) not installed"
    if missing:
        assert os.environ.get("CI") != "true", f"browser tests must run in CI: {missing}"
        pytest.skip(missing)


@contextmanager
def open_page(path: Path, width: int = 1400, height: int = 1200) -> Iterator[tuple[object, list[str]]]:
    """The page loaded from file:// and the console errors/page errors it produced (a list that keeps filling)."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("request", lambda r: errors.append(f"request: {r.url}") if not r.url.startswith(("file:", "data:", "blob:")) else None)
            page.goto(path.resolve().as_uri())
            yield page, errors
        finally:
            browser.close()
