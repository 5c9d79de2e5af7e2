"""Debian's chromium driven by Playwright for Python (no browser is downloaded), for the browser tests and the
screenshot script.

Install: ``apt-get install -y chromium`` (CI does) and the ``test`` extra (``playwright``). A test that needs the
browser is skipped, saying so, only when ``/usr/bin/chromium`` is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--lang=zh-CN",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A phone: what the cadres' pages are made for.
PHONE = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


def require_chromium() -> None:
    """Skip the calling test, with the reason, when Debian's chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")


def launch(playwright):
    """Headless chromium from ``/usr/bin/chromium``."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
