"""A headless Chromium driven by Playwright: the system's browser (Debian's `chromium`),
never a download of Playwright's own, which needs a network we may not have."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from playwright.sync_api import Browser

#: No background traffic (updates, sync, metrics): a closed network refuses it noisily.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
INSTALL_HINT = "apt-get install chromium, and pip install 'k6-harvester[png]'"


def executable() -> str | None:
    """The browser to drive: $HARVESTER_CHROMIUM, else chromium on the PATH."""
    return os.environ.get("HARVESTER_CHROMIUM") or shutil.which("chromium")


@contextmanager
def chromium() -> Iterator[Browser]:
    path = executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ConfigError(f"PNG output needs Playwright and Chromium: {INSTALL_HINT}") from None
    if path is None:
        raise ConfigError(f"PNG output needs Chromium, which is not installed: {INSTALL_HINT}")
    if not os.access(path, os.X_OK):
        raise ConfigError(f"the browser {path} is not an executable: {INSTALL_HINT}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
