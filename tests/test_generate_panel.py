"""Generate into the map and regenerate from a seed, in a real browser against `python -m dashboards serve`
on the paired digits lake (CPU); and the Regenerate result's HTML, without a browser."""

from __future__ import annotations

import time

import pytest

from dashboards.browser import MARKER_ROLES_JS, PLOT_JS
from dashboards.generate_panel import generated_html, regenerated_html
from ingest.interactive import PixelDifference, Reproduction
from store import catalogue, connect
from store.lake import LayoutKey
from store.placement import place_run
from tests.conftest import images_loaded


def open_map(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".lens-shown", timeout=60_000)
    page.wait_for_function(f"() => ({PLOT_JS})() !== null", timeout=60_000)
    page.wait_for_timeout(500)


@pytest.mark.browser
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


@pytest.mark.browser
def test_regenerate_a_point_from_its_seed(paired_server, paired_page):
    page = paired_page
    open_map(page, f"{paired_server['url']}/explorer?run={paired_server['student']}&sample=5")
    page.wait_for_selector(".lens-selected-sample[data-sample='5']", timeout=20_000)
    page.get_by_role("button", name="Regenerate from its seed").click()
    result = page.locator(".lens-regenerated[data-sample='5']")
    result.wait_for(timeout=60_000)
    assert result.get_attribute("data-verdict") == "identical"  # 300 of 300 digits samples are, alone, on CPU
    assert "Identical image (bit for bit)" in result.inner_text()
    assert page.problems == []


def test_the_regenerate_result_is_the_summary_line_escaped():
    result = Reproduction("run<x>", 5, 42, PixelDifference(1, 1, 3072), 6, 1e-4, 2e-5, 64, 1, "cpu", "cpu", b"")
    html = regenerated_html(5, result)
    assert "data-verdict='rounding'" in html and "data-sample='5'" in html
    assert ("sample 5 (seed 42): Equal up to batch-size rounding: max difference 1/255 in 1 of 3,072 pixel values "
            "(batch of 64 at ingest, batch of 1 now); activations within 1e-4 (6 vectors).") in html
    device = "<script>alert(1)</script>"  # a device name from a hostile lake's run log
    hostile = regenerated_html(5, Reproduction("r", 5, 42, PixelDifference(9, 40, 64), 6, 0.0, 0.0, 50, 1, device,
                                                "cpu", b""))
    assert "<script>" not in hostile and "on &lt;script&gt;alert(1)&lt;/script&gt; at ingest" in hostile


def test_a_generated_sample_shows_a_hostile_prompt_as_text():
    """The Generate card repeats what the user typed (a prompt) and what a lake holds (run id, layer name)."""
    prompt = "<img src=x onerror=alert(1)> & 'quotes'"
    key = LayoutKey("run", "dec.<b>8x8</b>", "mean", 1, "abc")
    html = generated_html("gen-'><script>x</script>", 7, 42, prompt, (0.1234, -5.0), key, 3)
    assert "<img src=x" not in html and "<script>" not in html and "<b>8x8" not in html
    assert "<b>&lt;img src=x onerror=alert(1)&gt; &amp; &#x27;quotes&#x27;</b>, seed 42: lands at (0.123, -5) on " \
           "dec.&lt;b&gt;8x8&lt;/b&gt; · step 1; its 3 nearest samples:" in html
    assert "data-run='gen-&#x27;&gt;&lt;script&gt;x&lt;/script&gt;' data-seed='42' data-sample='7'" in html
    assert "src='/image/gen-&#x27;&gt;&lt;script&gt;x&lt;/script&gt;/0/7/thumb'" in html


def test_generate_and_regenerate_wait_for_the_sessions_running_job(embedded_lake):
    """While a recompute (or any heavy job) runs for the page, Generate and Regenerate refuse with a notice
    and start nothing; a seed whose samples would pass 2**63 is refused."""
    import threading

    from dashboards.generate_panel import GeneratePanel
    from dashboards.map_state import MapState
    from store import maps

    lake = embedded_lake["lake"]
    state = MapState(str(lake), connect(lake))
    state.points = maps.points_for(lake, catalogue.list_layouts(lake)[0])
    state.selected_id = int(state.points.frame["sample_id"].iat[0])
    panel = GeneratePanel(state, lambda: 5, lambda positions: None, lambda sample: None, lambda fn: fn())
    panel.follow_layout()
    threads = threading.active_count()
    assert state.job.start("a layout being computed") is None
    panel.start_generate()
    assert "a layout being computed is still running" in panel.status.object and not panel.button.disabled
    panel.start_regenerate()
    assert "still running" in panel.regenerate_status.object
    assert threading.active_count() == threads  # no worker was started
    state.job.done()
    panel.count.value = 2
    panel.seed.value = str(2**63 - 1)
    panel.start_generate()
    assert "not a whole number from 0 to" in panel.status.object and state.job.running is None
