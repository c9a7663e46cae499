"""A real headless browser for the UI tests: Debian's Chromium (`make browser`) driven by
Playwright, which never downloads a browser of its own. Screenshots go to test-artifacts/
(SUBJECTLAB_TEST_ARTIFACTS names another folder) for a person to look at after a run."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.conftest import ROOT

CHROMIUM = Path(os.environ.get("SUBJECTLAB_CHROMIUM", "/usr/bin/chromium"))
# Flags for a machine with no network beyond localhost: no background fetches, no sync, no
# component updates (each would be refused, many times over), no GPU, no sandbox as root.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("SUBJECTLAB_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def browser_page(width: int = 1500, height: int = 950) -> Iterator:
    """A fresh page in a fresh browser profile: what a new user sees, nothing remembered."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: `make browser` installs Debian's chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()
