"""The web UI's tests: pytest-playwright driving Debian's Chromium (never a browser that
Playwright downloads) against a real `fleet local`.

Without Chromium these tests FAIL, saying how to install it: a skipped browser test would let
a broken UI pass CI unnoticed."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Every run saves a screenshot of each page; into docs/screenshots (the pictures docs/ui.md and
# the README show) only when asked, `FLEET_UI_SCREENSHOTS=docs/screenshots`, so that a test run
# leaves the checkout as it was.
SCREENSHOTS = Path(os.environ.get("FLEET_UI_SCREENSHOTS")
                   or Path(tempfile.gettempdir()) / "fleet-ui-screenshots")
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    found = os.environ.get("FLEET_TEST_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    if not found:
        pytest.fail("the web UI tests need Chromium: `apt-get install -y chromium` (Debian's "
                    "package; `playwright install` cannot download here), or set "
                    "FLEET_TEST_CHROMIUM to a Chromium binary", pytrace=False)
    return found


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's browser, launched from Debian's Chromium."""
    return {**browser_type_launch_args, "executable_path": chromium_path()}


class PageWatch:
    """What went wrong in a page: console errors, uncaught exceptions, requests that failed or
    got an error status. Requests the page cancelled itself (ERR_ABORTED: a poll cut short by
    leaving the page, an estimate superseded by a newer one) are not failures."""

    def __init__(self, page: Any):
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"exception: {e}"))
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: r.status >= 400 and self.problems.append(
            f"HTTP {r.status} {r.request.method} {r.url}"))

    def _failed(self, request: Any) -> None:
        failure = request.failure or ""
        if "ERR_ABORTED" not in failure:
            self.problems.append(f"failed: {request.method} {request.url} {failure}")

    def clear(self) -> None:
        self.problems.clear()


@pytest.fixture
def watch(page: Any) -> Iterator[PageWatch]:
    yield PageWatch(page)


def screenshot(page: Any, name: str) -> Path:
    """Saved under SCREENSHOTS (docs/screenshots when refreshing the docs' pictures)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
