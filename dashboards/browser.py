"""Driving the dashboard from headless Chromium (Debian's, through Playwright's `executable_path`; no
browser download): shared by the browser tests and the dashboard benchmark."""

from __future__ import annotations

import os
import socket

CHROMIUM = os.environ.get("DMD2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-extensions", "--no-first-run"]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(playwright):
    """Headless Chromium from CHROMIUM ($DMD2_CHROMIUM overrides the path)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
