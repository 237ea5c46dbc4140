"""dashboards.browser: the helpers the browser tests and the dashboard benchmark share (a free port, the
drawn share of a map's pixels, headless Chromium)."""

from __future__ import annotations

import socket
import urllib.parse

import numpy as np
import pytest

from dashboards.browser import CHROMIUM_FLAGS, coloured_fraction, free_port


def test_free_port_can_be_bound():
    ports = set()
    for _ in range(3):
        port = free_port()
        assert 1024 <= port <= 65535
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it
            sock.listen()
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
        ports.add(port)
    assert ports


def test_coloured_fraction():
    white = np.full((40, 60, 3), 255, np.uint8)
    assert coloured_fraction(white) == 0.0
    # "near white": the channels' distances from 255 summed stay within 60
    near_white = white.copy()
    near_white[:, :20] = (235, 240, 250)  # 20 + 15 + 5 = 40: still blank paper
    near_white[:, 20:40] = (255, 255, 195)  # 60: still blank
    near_white[:, 40:] = (230, 230, 244)  # 25 + 25 + 11 = 61: drawn, though no channel is far off
    assert coloured_fraction(near_white) == pytest.approx(20 / 60)

    half_red = white.copy()
    half_red[:, :30] = (255, 0, 0)
    assert coloured_fraction(half_red) == 0.5
    black = np.zeros_like(white)
    assert coloured_fraction(black) == 1.0

    speckled = white.copy()
    rows, cols = np.unravel_index(np.random.default_rng(0).choice(40 * 60, 600, replace=False), (40, 60))
    speckled[rows, cols] = (30, 120, 200)
    assert coloured_fraction(speckled) == 600 / (40 * 60)


def test_chromium_flags_are_headless():
    assert "--headless" in CHROMIUM_FLAGS
    assert all(flag.startswith("--") for flag in CHROMIUM_FLAGS)


def test_launch_gives_a_working_browser(browser):
    """`browser` is conftest's `dashboards.browser.launch` of Debian's Chromium."""
    html = "<html><head><title>dmd2-lens check</title></head><body><p id=p>ok</p></body></html>"
    page = browser.new_page()
    try:
        page.goto("data:text/html," + urllib.parse.quote(html))
        assert page.title() == "dmd2-lens check"
        assert page.evaluate("document.getElementById('p').textContent + (1 + 2)") == "ok3"
        assert "HeadlessChrome" in page.evaluate("navigator.userAgent")  # headless
    finally:
        page.close()
    assert browser.is_connected()
