"""Generate into the map and regenerate from a seed, in a real browser against `python -m dashboards serve`
on the paired digits lake (CPU)."""

from __future__ import annotations

import time

import pytest

from dashboards.browser import MARKER_ROLES_JS, PLOT_JS
from store import catalogue, connect
from store.placement import place_run
from tests.conftest import images_loaded

pytestmark = pytest.mark.browser


def open_map(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".lens-shown", timeout=60_000)
    page.wait_for_function(f"() => ({PLOT_JS})() !== null", timeout=60_000)
    page.wait_for_timeout(500)


def test_generate_a_digit_into_the_map(paired_server, paired_page):
    page, lake, student = paired_page, paired_server["lake"], paired_server["student"]
    open_map(page, f"{paired_server['url']}/explorer?run={student}")
    page.locator("select:has(option:text-is('7'))").last.select_option(label="7")
    page.locator("input[placeholder='random']").fill("42")
    page.locator("input[placeholder='random']").press("Enter")
    page.wait_for_timeout(300)
    started = time.monotonic()
    page.get_by_role("button", name="Generate and place").click()
    card = page.locator(".lens-generated-sample[data-seed='42']")
    card.wait_for(timeout=120_000)
    print(f"class 7, seed 42: generated, placed and listed in {time.monotonic() - started:.1f} s")
    run_id = card.get_attribute("data-run")
    rows = connect(lake).sql("SELECT seed, class_id FROM samples WHERE run_id = $r", params={"r": run_id}).fetchall()
    assert rows == [(42, 7)]  # appended to the lake as a run of its own
    layer = page.locator("select").nth(1).input_value()
    key = next(k for k in catalogue.list_layouts(lake) if k.run_id == student and k.layer == layer)
    expected = [int(i) for i in place_run(lake, key, run_id, k=10)["neighbour_ids"].iat[0]]
    shown = [int(s) for s in page.locator(".lens-generated-neighbours").last.locator(".lens-thumb").evaluate_all(
        "els => els.map(e => e.dataset.sample)")]
    assert shown == expected
    deadline = time.monotonic() + 10
    while "generated" not in page.evaluate(MARKER_ROLES_JS)[0] and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert page.evaluate(MARKER_ROLES_JS)[0].count("generated") == 1  # marked on the map
    page.wait_for_timeout(800)
    assert images_loaded(page, ".lens-generated-sample img")
    assert page.problems == []


def test_regenerate_a_point_from_its_seed(paired_server, paired_page):
    page = paired_page
    open_map(page, f"{paired_server['url']}/explorer?run={paired_server['student']}&sample=5")
    page.wait_for_selector(".lens-selected-sample[data-sample='5']", timeout=20_000)
    page.get_by_role("button", name="Regenerate from its seed").click()
    result = page.locator(".lens-regenerated[data-sample='5']")
    result.wait_for(timeout=60_000)
    assert result.get_attribute("data-verdict") in ("identical", "reproduced within float rounding")
    assert "image identical" in result.inner_text()
    assert page.problems == []
