"""The Map tab's state changes, without a browser (the page itself: tests/test_explorer.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dashboards.map_tab import MapTab


def test_malformed_url_parameters_are_ignored_with_a_notice(hostile_lake):
    tab = MapTab(str(hostile_lake["lake"]), {"run": "../../etc", "layer": "<b>x</b>", "sample": "1e9'",
                                       "classes": "3,drop", "step": "-1"})
    notices = tab.notices.object
    assert notices.count("lens-notice") == 5  # run, layer, sample, classes, step
    assert "step=&#x27;-1&#x27;" in notices
    assert "&lt;b&gt;x&lt;/b&gt;" in notices and "<b>x</b>" not in notices
    assert tab.state.selected_id is None and tab.filters.classes.value == []
    assert int(tab.state.keep.sum()) == len(tab.state.points)


def test_filters_reach_the_map_and_the_address_bar(embedded_lake):
    states = []
    tab = MapTab(str(embedded_lake["lake"]), on_state=states.append)
    frame = tab.state.points.frame
    before = tab.map.revision.revision
    tab.filters.classes.value = [3]
    assert np.array_equal(tab.state.keep, frame["class_id"].to_numpy() == 3)
    assert np.array_equal(tab.map.keep, tab.state.keep) and tab.map.revision.revision > before  # redrawn
    xs = frame["x"].to_numpy()[frame["class_id"].to_numpy() == 3]
    (x0, x1), _ = tab.map.view_range  # fitted to class 3
    assert x0 < xs.min() and x1 > xs.max() and (x1 - x0) < 1.2 * (xs.max() - xs.min())
    assert states[-1]["classes"] == "3" and states[-1]["layout"] == tab.state.key.params_hash
    tab.select_sample(int(frame["sample_id"].iat[4]))
    assert states[-1]["sample"] == str(int(frame["sample_id"].iat[4]))


def test_show_label_filters_by_class_or_prompt(hostile_lake):
    tab = MapTab(str(hostile_lake["lake"]), {"run": hostile_lake["run_id"]})
    tab.show_label(hostile_lake["run_id"], tab.state.key.layer, "7")
    assert tab.filters.classes.value == [7] and tab.filters.prompt.value == ""
    tab.show_label(hostile_lake["run_id"], tab.state.key.layer, "7: 7")  # an older lake's label
    assert tab.filters.classes.value == [7]
    tab.show_label("hostile", "synthetic", "<script>alert(1)</script>")
    assert tab.state.key.run_id == "hostile" and tab.filters.prompt.value == "<script>alert(1)</script>"
    assert tab.filters.classes.value == [] and 0 < int(tab.state.keep.sum()) < len(tab.state.points)


def test_the_selection_follows_across_layers_and_markers_follow_the_state(embedded_lake):
    tab = MapTab(str(embedded_lake["lake"]))
    sample = int(tab.state.points.frame["sample_id"].iat[9])
    tab.select_sample(sample)
    tab.inspector.collect([int(tab.state.points.frame["sample_id"].iat[1])])
    roles = sorted(tab.map.markers.data["role"])
    assert roles.count("selected") == 1 and roles.count("collected") == 1 and roles.count("neighbour") == 10
    other = next(k for k in tab.picker.layouts if k.layer != tab.state.key.layer)
    tab.picker.choose(key=other)
    assert tab.state.key == other and tab.state.selected_id == sample
    assert sorted(tab.map.markers.data["role"]).count("selected") == 1


def overlay_pixels(tab) -> int:
    """Pixels of the map's raster in the overlay's dark grey."""
    from dashboards.render import OVERLAY_COLOUR

    rgb = tuple(int(OVERLAY_COLOUR[i:i + 2], 16) for i in (1, 3, 5))
    image = tab.map.render(revision=tab.map.revision.revision)
    data = np.asarray(image.data)
    return int(((data[..., :3] == rgb).all(axis=2) & (data[..., 3] > 0)).sum())


def test_another_run_shows_under_the_map_and_follows_the_class_filter(featured_lake):
    tab = MapTab(str(featured_lake["lake"]), {"run": featured_lake["student"], "layer": "features.digits"})
    assert tab.state.key.layer == "features.digits"
    assert featured_lake["real"] in tab.overlay.options and overlay_pixels(tab) == 0
    tab.overlay.value = featured_lake["real"]
    assert len(tab.map.overlay) == 1797 and overlay_pixels(tab) > 100
    assert "data-count='1797'" in tab.overlay_info.object
    tab.filters.classes.value = [3]
    expected = int((tab.map.overlay["class_id"] == 3).sum())
    assert expected == len(tab.map.overlay) and 150 < expected < 200  # the real 3s only
    tab.overlay.value = "(none)"
    assert tab.map.overlay is None and overlay_pixels(tab) == 0


@pytest.mark.browser
def test_the_real_digits_appear_on_the_students_feature_map_in_the_browser(browser, featured_lake, featured_server):
    from dashboards.browser import PLOT_JS, map_pixels
    from dashboards.render import OVERLAY_COLOUR
    from tests.conftest import REPO, checked_page
    from tests.test_explorer import wait_for_pixels_to_change

    rgb = np.array([int(OVERLAY_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    server = featured_server
    with checked_page(browser, server) as page:
        page.goto(f"{server.url}/explorer?run={featured_lake['student']}&layer=features.digits")
        page.wait_for_selector(".lens-shown", timeout=60_000)
        page.wait_for_function(f"() => ({PLOT_JS})() !== null", timeout=60_000)
        page.wait_for_timeout(500)
        before = map_pixels(page)
        page.locator(f"select:has(option:text-is('{featured_lake['real']}'))").select_option(featured_lake["real"])
        after = wait_for_pixels_to_change(page, before)
        grey_before = int((np.abs(before.astype(int) - rgb).sum(2) < 12).sum())
        grey_after = int((np.abs(after.astype(int) - rgb).sum(2) < 12).sum())
        assert grey_before == 0 and grey_after > 500, (grey_before, grey_after)
        page.wait_for_selector(".lens-overlay[data-count='1797']", timeout=10_000)
        page.screenshot(path=str(REPO / ".cache" / "screenshots" / "overlay.png"))
        assert page.problems == []
