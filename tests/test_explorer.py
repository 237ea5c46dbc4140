"""The explorer in a real browser: Debian's Chromium (Playwright) against a real `panel serve` process
on an ephemeral port, over a lake made by ingest + embed with the embedded digits model, plus a
synthetic prompt run whose prompts and tags are hostile HTML.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from dashboards.browser import PLOT_JS as PLOT_GEOMETRY_JS  # the plot's frame and ranges, read in the page
from dashboards.browser import MARKER_ROLES_JS, coloured_fraction, map_pixels, plot_geometries
from store import catalogue, maps
from store.lake import LayoutKey
from store.neighbours import build_graph
from tests.conftest import (REPO, Server, checked_page, class_colour_shares, dark_pixels_near, images_loaded,
                            isolated_point, our_warnings, recording_page, server_errors)
from tests.conftest import HOSTILE_PROMPT, HOSTILE_PROMPTS

pytestmark = pytest.mark.browser


SCREENSHOT = REPO / ".cache" / "screenshots" / "explorer.png"

@pytest.fixture()
def page(browser, served):
    with checked_page(browser, served["server"]) as page:
        yield page


def open_explorer(page, url: str, query: str = "") -> None:
    page.goto(f"{url}/explorer{query}")
    wait_until_drawn(page)


def wait_until_drawn(page) -> None:
    """Until the explorer shows its count and its map's frame, then half a second for the raster."""
    page.wait_for_selector(".lens-shown", timeout=60_000)
    page.wait_for_function(f"() => ({PLOT_GEOMETRY_JS})() !== null", timeout=60_000)
    page.wait_for_timeout(500)


def shown_count(page) -> int:
    return int(page.locator(".lens-shown").inner_text().replace(",", ""))


def click_point(page, x: float, y: float) -> None:
    g = page.evaluate(PLOT_GEOMETRY_JS)
    px = g["left"] + (x - g["x0"]) / (g["x1"] - g["x0"]) * g["width"]
    py = g["top"] + (g["y1"] - y) / (g["y1"] - g["y0"]) * g["height"]
    page.mouse.click(px, py)


def until_selected(page, action, sample_id: int, attempts: int = 3) -> None:
    """Do `action` (a click, typing an id) until the sample is selected: one that lands while the page is
    still syncing its first render can be dropped by the browser, so do it again, as a user would."""
    for attempt in range(attempts):
        action()
        try:
            page.wait_for_selector(f".lens-selected-sample[data-sample='{sample_id}']", timeout=8_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise


def click_until_selected(page, x: float, y: float, sample_id: int) -> None:
    until_selected(page, lambda: click_point(page, x, y), sample_id)


def jump_to(page, sample_id: int) -> None:
    """Type a sample id into the jump box and press Enter."""
    box = page.locator("input[placeholder='e.g. 1234']")

    def type_it() -> None:
        box.fill("")
        box.fill(str(sample_id))
        box.press("Enter")

    until_selected(page, type_it, sample_id)


def wait_for_selected(page, sample_id: int) -> None:
    page.wait_for_selector(f".lens-selected-sample[data-sample='{sample_id}']", timeout=20_000)


def open_with_neighbours(page, url: str, run_id: str, sample: int) -> list[int]:
    """Open the explorer on a selected sample; its neighbours' ids as listed on the page."""
    open_explorer(page, url, f"?run={run_id}&sample={sample}")
    wait_for_selected(page, sample)
    page.wait_for_selector(".lens-neighbours .lens-thumb", timeout=10_000)
    return neighbour_ids_on_page(page)


def neighbour_ids_on_page(page) -> list[int]:
    return [int(s) for s in page.locator(".lens-neighbours .lens-thumb").evaluate_all(
        "els => els.map(e => e.dataset.sample)")]


def data_to_pixel(page, x: float, y: float, index: int = 0) -> tuple[float, float]:
    """Where data point (x, y) lies in map `index`'s own pixels (as `map_pixels` returns them)."""
    g = plot_geometries(page)[index]
    return ((x - g["x0"]) / (g["x1"] - g["x0"]) * g["width"], (g["y1"] - y) / (g["y1"] - g["y0"]) * g["height"])


def wait_for_pixels_to_change(page, before: np.ndarray, index: int = 0, timeout: float = 20) -> np.ndarray:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = map_pixels(page, index)
        if now.shape != before.shape or (np.abs(now.astype(int) - before.astype(int)).sum(2) > 30).mean() > 0.001:
            return wait_for_stable_pixels(page, index, deadline)
        page.wait_for_timeout(100)
    raise AssertionError("the map's pixels did not change")


def default_key(served) -> LayoutKey:
    """The layout the page opens on for the served student run: its newest full layout."""
    return catalogue.newest_full_layout(served["lake"], [k for k in catalogue.list_layouts(served["lake"])
                                                     if k.run_id == served["run_id"]])


def wait_for_url(page, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in page.url and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert text in page.url


def hue_share(pixels: np.ndarray, low: float, high: float) -> float:
    """The share of a map's clearly coloured pixels whose hue (degrees) lies in [low, high]."""
    import colorsys

    flat = pixels.reshape(-1, 3).astype(float) / 255
    chromatic = flat[(flat.max(1) - flat.min(1)) > 0.15]
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] * 360 for p in chromatic])
    return float(((hues >= low) & (hues <= high)).mean()) if len(hues) else 0.0


def wait_for_stable_pixels(page, index: int, deadline: float) -> np.ndarray:
    """The map once two screenshots 300 ms apart agree (the last raster of a change has arrived)."""
    last = map_pixels(page, index)
    while time.monotonic() < deadline:
        page.wait_for_timeout(300)
        now = map_pixels(page, index)
        if now.shape == last.shape and np.array_equal(now, last):
            return now
        last = now
    return last


def choose_class(page, text: str) -> None:
    choice = page.locator(".choices__input--cloned").first
    choice.click()
    choice.press_sequentially(text, delay=50)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")


def test_page_loads_and_draws_the_map(served, page):
    outside = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((served["url"], "data:", "blob:"))
            else None)
    open_explorer(page, served["url"])
    assert coloured_fraction(map_pixels(page)) > 0.002, "the map looks blank"
    assert shown_count(page) == 300
    sidebar = page.locator(".lens-sidebar").first.bounding_box()
    g = plot_geometries(page)[0]
    assert sidebar["x"] + sidebar["width"] <= g["left"]  # the template: controls in a sidebar, the map beside it
    assert g["width"] >= 700 and g["height"] >= 550  # the map fills the main area at 1500 x 1100
    assert outside == []  # nothing is fetched from outside the server (fonts, scripts)
    assert page.problems == []


def test_class_filter_redraws_only_that_class_fitted(served, page):
    open_explorer(page, served["url"], f"?run={served['run_id']}")
    key = catalogue.newest_full_layout(served["lake"], [k for k in catalogue.list_layouts(served["lake"])
                                                    if k.run_id == served["run_id"]])
    points = maps.points_for(served["lake"], key)
    classes = sorted(points.class_names)
    before = map_pixels(page)
    assert max(class_colour_shares(before, classes).values()) < 0.5  # every class is drawn
    choose_class(page, "3")
    after = wait_for_pixels_to_change(page, before)
    shares = class_colour_shares(after, classes)
    assert shares[3] > 0.97, shares  # only class 3's colour remains on the map
    expected = int((points.frame["class_id"] == 3).sum())
    assert shown_count(page) == expected
    g = plot_geometries(page)[0]  # the view fits class 3's points
    xs = points.frame["x"].to_numpy()[points.frame["class_id"] == 3]
    assert g["x0"] <= xs.min() and g["x1"] >= xs.max()
    assert (g["x1"] - g["x0"]) <= 1.2 * (xs.max() - xs.min())
    wait_for_url(page, "classes=3")  # the address bar follows
    assert page.problems == []


def test_colour_by_density_changes_the_map_and_the_legend(served, page):
    open_explorer(page, served["url"], f"?run={served['run_id']}")
    before = map_pixels(page)
    page.locator("select:has(option:text-is('density'))").select_option(label="density")
    after = wait_for_pixels_to_change(page, before)
    key = catalogue.newest_full_layout(served["lake"], [k for k in catalogue.list_layouts(served["lake"])
                                                    if k.run_id == served["run_id"]])
    classes = sorted(maps.points_for(served["lake"], key).class_names)
    assert max(class_colour_shares(before, classes).values()) < 0.5
    # density is drawn in the fire colour map (reds to yellows), not in the class colours
    assert hue_share(after, 0, 65) > 0.9 and hue_share(before, 0, 65) < 0.6
    page.wait_for_selector(".lens-colour-bar[data-colour='density']", timeout=10_000)
    assert page.problems == []


def best_separated_layout(lake: Path, run_id: str) -> LayoutKey:
    """The run's layout whose 2-D map keeps classes apart best (10-NN class purity on the map)."""
    from sklearn.neighbors import NearestNeighbors

    def purity(key: LayoutKey) -> float:
        frame = maps.load_points(lake, key).frame
        _, rows = NearestNeighbors(n_neighbors=11).fit(frame[["x", "y"]]).kneighbors(frame[["x", "y"]])
        labels = frame["class_id"].to_numpy()
        return float((labels[rows[:, 1:]] == labels[:, None]).mean())

    full = catalogue.full_layouts(lake, [k for k in catalogue.list_layouts(lake) if k.run_id == run_id])
    return max(full, key=purity)  # full layouts only: the page opens a layer on its newest full layout


def selected_ring_visible(page, points, sample: int) -> bool:
    row = int(points.rows_of([sample])[0])
    px, py = data_to_pixel(page, float(points.frame["x"].iat[row]), float(points.frame["y"].iat[row]))
    return dark_pixels_near(map_pixels(page), px, py) >= 20


def test_click_shows_the_point_its_true_neighbours_and_its_ring(served, page):
    key = best_separated_layout(served["lake"], served["run_id"])  # also the README's screenshot
    open_explorer(page, served["url"], f"?run={served['run_id']}&layer={key.layer}")
    page.wait_for_timeout(500)
    points = maps.points_for(served["lake"], key)
    row = isolated_point(points, np.random.default_rng(0))
    sample = int(points.frame["sample_id"].iat[row])
    x, y = float(points.frame["x"].iat[row]), float(points.frame["y"].iat[row])
    page.mouse.move(0, 0)  # no hover ring in the picture
    page.wait_for_timeout(300)
    px, py = data_to_pixel(page, x, y)
    dark_before = dark_pixels_near(map_pixels(page), px, py)
    click_until_selected(page, x, y, sample)
    page.wait_for_selector(".lens-neighbours .lens-thumb", timeout=10_000)
    graph = build_graph(served["lake"], served["run_id"], key.layer, key.pooling)
    expected, distances = graph.of(sample, 10)
    assert neighbour_ids_on_page(page) == [int(i) for i in expected]
    shown = page.locator(".lens-neighbours .lens-distance").all_inner_texts()
    assert shown == [f"{d:.3g}" for d in distances]  # three significant digits
    page.mouse.move(0, 0)
    deadline = time.monotonic() + 10
    while dark_pixels_near(map_pixels(page), px, py) < dark_before + 20 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert dark_pixels_near(map_pixels(page), px, py) >= dark_before + 20  # the black-and-white ring is drawn
    page.wait_for_timeout(500)
    assert images_loaded(page, ".lens-neighbours .lens-thumb img")
    assert images_loaded(page, ".lens-selected-sample img")
    assert page.problems == []
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))  # the README's picture (`make screenshot`)


def test_thumbnails_select_remove_and_collect(served, page):
    run_id = served["run_id"]
    neighbours = open_with_neighbours(page, served["url"], run_id, 7)
    # remove one neighbour from the set; the rest stay in order
    page.locator(f".lens-neighbours .lens-thumb[data-sample='{neighbours[1]}'] .lens-thumb-remove").click()
    deadline = time.monotonic() + 10
    while neighbour_ids_on_page(page) == neighbours and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert neighbour_ids_on_page(page) == neighbours[:1] + neighbours[2:]
    # + collects a neighbour without changing the selection
    page.locator(f".lens-neighbours .lens-thumb[data-sample='{neighbours[0]}'] .lens-thumb-collect").click()
    page.wait_for_selector(f".lens-collected .lens-thumb[data-sample='{neighbours[0]}']", timeout=10_000)
    wait_for_selected(page, 7)
    # a click on a thumbnail selects that sample, and its ring moves there on the map
    page.locator(f".lens-neighbours .lens-thumb[data-sample='{neighbours[2]}'] img").click()
    wait_for_selected(page, neighbours[2])
    points = maps.points_for(served["lake"], default_key(served))
    page.mouse.move(0, 0)
    deadline = time.monotonic() + 10
    while not selected_ring_visible(page, points, neighbours[2]) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert selected_ring_visible(page, points, neighbours[2])
    wait_for_url(page, f"sample={neighbours[2]}")
    jump_to(page, 11)  # the jump box selects by id
    page.get_by_role("button", name="Collect neighbours").click()
    page.wait_for_selector(".lens-collected-count", timeout=10_000)
    page.wait_for_timeout(1000)
    assert our_warnings(page) == []  # e.g. no Bokeh "nonexistent field" when rings are added
    assert page.problems == []


def test_switching_layers_keeps_the_selection_and_redraws(served, page):
    keys = [k for k in catalogue.list_layouts(served["lake"]) if k.run_id == served["run_id"]]
    first = keys[0]
    points = maps.points_for(served["lake"], first)
    sample = int(points.frame["sample_id"].iat[7])
    open_explorer(page, served["url"], f"?run={served['run_id']}&layer={first.layer}&sample={sample}")
    wait_for_selected(page, sample)
    before = map_pixels(page)
    other = next(k for k in keys if k.layer != first.layer)
    page.locator("select").nth(1).select_option(other.layer)
    wait_for_pixels_to_change(page, before)
    deadline = time.monotonic() + 20
    graph = build_graph(served["lake"], served["run_id"], other.layer, other.pooling)
    expected = [int(i) for i in graph.of(sample, 10)[0]]
    while neighbour_ids_on_page(page) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    wait_for_selected(page, sample)
    assert neighbour_ids_on_page(page) == expected
    wait_for_url(page, f"layer={other.layer}")
    assert page.problems == []


# Every element the page made from hostile text, looked for through every (open) shadow root: an element
# carrying an inline handler, an <img src=x>, a <b> holding "bold", a <script> calling alert.
INJECTED_JS = """
() => {
  const found = [];
  function walk(root) {
    for (const e of root.querySelectorAll('*')) {
      const tag = e.tagName.toLowerCase();
      const where = e.parentElement ? e.parentElement.outerHTML.slice(0, 160) : '';
      if ([...e.attributes].some(a => a.name.startsWith('on'))) found.push(e.outerHTML.slice(0, 80) + ' in ' + where);
      if (tag === 'img' && e.getAttribute('src') === 'x') found.push('img src=x');
      if (tag === 'b' && e.textContent === 'bold') found.push('<b>bold</b>');
      if (tag === 'script' && e.textContent.includes('alert(')) found.push('script ' + e.textContent.slice(0, 40));
      if (e.shadowRoot) walk(e.shadowRoot);
    }
  }
  walk(document);
  return found;
}
"""


def hostile_points(served):
    key = next(k for k in catalogue.list_layouts(served["lake"]) if k.run_id == "hostile")
    return maps.points_for(served["lake"], key)


def hover_until_card(page, x: float, y: float, index: int = 0):
    """Move the mouse onto data point (x, y) until the hover card shows (the server draws the hovered point
    under the cursor first); the card's locator."""
    g = plot_geometries(page)[index]
    px, py = data_to_pixel(page, x, y, index)
    tooltip = page.locator(".lens-tooltip >> visible=true")
    for _ in range(20):
        page.mouse.move(g["left"] + px + 1, g["top"] + py)
        page.wait_for_timeout(300)
        page.mouse.move(g["left"] + px, g["top"] + py)
        page.wait_for_timeout(200)
        if tooltip.count():
            break
    return tooltip


def test_hostile_prompts_are_shown_as_text(served, page):
    """Prompts and tags that are HTML/JS reach every card as the characters they are: in the legend (by
    prompt and by tag), the selected sample's card, the hover card, the filters' counts, the jump box's
    and the save box's messages; no element is made of them and no script runs."""
    points = hostile_points(served)
    frame = points.frame
    script_row = int(np.flatnonzero((frame["prompt"] == HOSTILE_PROMPT).to_numpy())[0])
    sample = int(frame["sample_id"].iat[script_row])
    assert frame["tags"].iat[script_row] == "<b>bold</b>"
    open_explorer(page, served["url"], f"?run=hostile&sample={sample}")
    wait_for_selected(page, sample)
    legend = page.locator(".lens-legend-rows").inner_text()
    for prompt in HOSTILE_PROMPTS:  # each prompt, literally, with its count
        assert f"{prompt} ({int((frame['prompt'] == prompt).sum()):,})" in legend, legend
    card = page.locator(".lens-selected-sample").inner_text()
    assert HOSTILE_PROMPT in card and "<b>bold</b>" in card, card  # its prompt and its tag, as text
    # colour by tag: the tag's key row, as text
    page.locator("select:has(option:text-is('tag'))").select_option(label="tag")
    deadline = time.monotonic() + 15
    while "<b>bold</b>" not in page.locator(".lens-legend-rows").inner_text() and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    bold = int((frame["tags"] == "<b>bold</b>").sum())
    assert f"<b>bold</b> ({bold:,})" in page.locator(".lens-legend-rows").inner_text()
    # the hover card of a point whose prompt is an <img onerror>
    img_row = int(np.flatnonzero((frame["prompt"] == "<img src=x onerror=alert(2)>").to_numpy())[0])
    tooltip = hover_until_card(page, float(frame["x"].iat[img_row]), float(frame["y"].iat[img_row]))
    assert tooltip.count() == 1
    assert "<img src=x onerror=alert(2)>" in tooltip.first.inner_text(), tooltip.first.inner_text()
    assert tooltip.first.locator("img").count() == 1  # the thumbnail only
    page.mouse.move(5, 5)
    # the tag filter matches the hostile tag's text: the count says so
    tag_box = page.locator("input[placeholder='any tag']")
    tag_box.fill("<b>")
    tag_box.press("Enter")
    expected = int(points.mask([], "", "<b>").sum())
    assert 0 < expected < len(frame)
    deadline = time.monotonic() + 10
    while shown_count(page) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert shown_count(page) == expected
    tag_box.fill("")
    tag_box.press("Enter")
    prompt_box = page.locator("input[placeholder='any prompt']")
    prompt_box.fill("<script>")
    prompt_box.press("Enter")
    expected = int(points.mask([], "<script>", "").sum())
    deadline = time.monotonic() + 10
    while shown_count(page) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert shown_count(page) == expected == int((frame["prompt"] == HOSTILE_PROMPT).sum())
    # the jump box and the save box say what was typed, as text
    jump = page.locator("input[placeholder='e.g. 1234']")
    jump.fill("<img src=x onerror=alert(3)>")
    jump.press("Enter")
    page.wait_for_selector(".lens-error", timeout=10_000)
    assert "no sample <img src=x onerror=alert(3)> in this layout" in page.locator(".lens-error").first.inner_text()
    page.get_by_role("button", name="Collect point").click()
    name = page.locator("input[placeholder='name, e.g. odd-sevens']")
    name.fill("<img src=x onerror=alert(4)>")
    name.press("Enter")
    page.wait_for_timeout(300)
    page.get_by_role("button", name="Save selection (collected + box/lasso)").click()
    deadline = time.monotonic() + 10
    while page.locator(".lens-error").count() < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert "invalid selection name '<img src=x onerror=alert(4)>'" in page.locator(".lens-error").last.inner_text()
    page.wait_for_timeout(1000)
    assert page.evaluate(INJECTED_JS) == []
    assert page.dialogs == []
    assert page.problems == []


def test_image_route_serves_only_lake_images(served):
    import urllib.error
    import urllib.request

    url = served["url"]
    with urllib.request.urlopen(f"{url}/image/{served['run_id']}/0/0/thumb") as response:
        assert response.headers["Content-Type"] in ("image/png", "image/webp")
        assert response.read()[:4] in (b"\x89PNG", b"RIFF")
    for bad in ("..%2F..%2Fetc/0/0", "hostile/0/999999", "hostile/7/0", "nope/0/0", "hostile/0/x"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/image/{bad}")
        assert err.value.code == 404


def test_recompute_layout_runs_once_in_the_background_and_is_shown(served, page):
    open_explorer(page, served["url"], f"?run={served['run_id']}&classes=1,7")
    subset = shown_count(page)
    assert 0 < subset < 300
    before = set(catalogue.list_layouts(served["lake"]))
    pixels = map_pixels(page)
    page.get_by_role("button", name="Recompute layout").dblclick()  # a double click runs one job
    page.wait_for_selector(".lens-recompute-status", timeout=10_000)
    page.wait_for_selector(".lens-recompute-done", timeout=240_000)
    new = set(catalogue.list_layouts(served["lake"])) - before
    assert len(new) == 1
    key = new.pop()
    points = maps.load_points(served["lake"], key)
    assert len(points) == subset
    deadline = time.monotonic() + 20
    while f"{subset} points" not in page.locator(".lens-model").inner_text() and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert f"{subset} points" in page.locator(".lens-model").inner_text()  # the new layout is shown
    name = page.locator("select").nth(3).locator("option:checked").inner_text()
    assert f"{subset} points" in name and "subset: classes 1, 7" in name and key.params_hash not in name
    after = wait_for_pixels_to_change(page, pixels)
    shares = class_colour_shares(after, sorted(points.class_names))
    assert shares[1] + shares[7] > 0.97  # the subset keeps the classes' colours
    assert page.problems == []


def test_a_selection_made_in_the_browser_is_read_back_in_python(served, page):
    from store.selections import read_selection

    run_id = served["run_id"]
    neighbours = open_with_neighbours(page, served["url"], run_id, 7)
    page.get_by_role("button", name="Collect neighbours").click()
    page.wait_for_timeout(500)
    page.locator("input[placeholder='name, e.g. odd-sevens']").fill("picked-in-browser")
    page.locator("input[placeholder='name, e.g. odd-sevens']").press("Enter")
    page.wait_for_timeout(300)
    page.get_by_role("button", name="Save selection (collected + box/lasso)").click()
    page.wait_for_selector(".lens-saved[data-name='picked-in-browser']", timeout=20_000)
    frame = read_selection(served["lake"], "picked-in-browser")
    assert sorted(frame["sample_id"]) == sorted(neighbours) and set(frame["run_id"]) == {run_id}
    assert page.problems == []


def test_the_page_renders_for_a_notebook_with_inline_images(served):
    import base64

    from bokeh.model import Model

    from dashboards.explorer import notebook
    from dashboards.render import inline_images

    try:
        page_ = notebook(str(served["lake"]))
        assert isinstance(page_.view().get_root(), Model)  # what Jupyter's display renders
        tab = page_.explorer
        tab.select_sample(int(tab.state.points.frame["sample_id"].iat[3]))
        tab.inspector.collect(tab.state.neighbour_ids)
        selected = tab.selection()
        assert sorted(selected["sample_id"]) == sorted(tab.state.neighbour_ids)
        source = tab.inspector.neighbours.items[0]["src"]
        assert source.startswith("data:image/")  # no image route in a notebook
        assert base64.b64decode(source.split(",", 1)[1])[:4] in (b"\x89PNG", b"RIFF")
    finally:
        inline_images(None)


PATHS_JS = """
() => {
  const lengths = [];  // every drawn path's length (the region outline is empty here)
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      if (m.type === 'GlyphRenderer' && m.glyph.type === 'MultiLine') lengths.push(...m.data_source.data.xs.map(p => p.length));
    }
  }
  return lengths;
}
"""


def test_trajectories_are_drawn_in_the_browser(served, page):
    open_explorer(page, served["url"], f"?run={served['run_id']}&sample=7")
    wait_for_selected(page, 7)
    page.locator(".lens-paths-toggle input[type=checkbox]").check()
    page.wait_for_selector(".lens-paths[data-kind='layers'][data-paths='1']", timeout=20_000)
    deadline = time.monotonic() + 10
    while page.evaluate(PATHS_JS) != [3] and time.monotonic() < deadline:  # one path through the 3 layers
        page.wait_for_timeout(200)
    assert page.evaluate(PATHS_JS) == [3]
    assert page.problems == []


def test_hover_shows_a_card_at_the_cursor_that_leaves_with_it(served, page):
    """Hovering a point draws a dark ring on it and shows its card (thumbnail, label, id) by the cursor;
    moving off the map takes both away."""
    key = best_separated_layout(served["lake"], served["run_id"])
    open_explorer(page, served["url"], f"?run={served['run_id']}&layer={key.layer}")
    page.wait_for_timeout(500)
    points = maps.points_for(served["lake"], key)
    row = isolated_point(points, np.random.default_rng(3))
    g = plot_geometries(page)[0]
    x, y = float(points.frame["x"].iat[row]), float(points.frame["y"].iat[row])
    px, py = data_to_pixel(page, x, y)
    page.mouse.move(5, 5)
    page.wait_for_timeout(300)
    dark_before = dark_pixels_near(map_pixels(page), px, py)
    tooltip = hover_until_card(page, x, y)
    assert tooltip.count() == 1
    sample = int(points.frame["sample_id"].iat[row])
    assert f"sample {sample}" in tooltip.first.inner_text()
    assert str(points.frame["label"].iat[row]) in tooltip.first.inner_text()
    box = tooltip.first.bounding_box()  # next to the cursor
    assert abs(box["x"] - (g["left"] + px)) < 200 and abs(box["y"] - (g["top"] + py)) < 200
    assert images_loaded(page, ".lens-tooltip img")
    # the hovered point's ring, in the map's pixels (the card is clipped out: it sits beside the point)
    hovered = map_pixels(page)
    card = tooltip.first.bounding_box()
    assert not (card["x"] - g["left"] <= px <= card["x"] - g["left"] + card["width"]
                and card["y"] - g["top"] <= py <= card["y"] - g["top"] + card["height"])
    assert dark_pixels_near(hovered, px, py) >= dark_before + 20, (dark_before, dark_pixels_near(hovered, px, py))
    page.mouse.move(5, 5)  # off the map: the card and the ring go
    page.wait_for_timeout(500)
    assert tooltip.count() == 0
    deadline = time.monotonic() + 10
    while dark_pixels_near(map_pixels(page), px, py) > dark_before + 5 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert dark_pixels_near(map_pixels(page), px, py) <= dark_before + 5
    assert page.problems == []


def test_the_address_bar_shares_the_view(served, page, browser):
    key = default_key(served)
    points = maps.points_for(served["lake"], key)
    sample = int(points.frame["sample_id"].to_numpy()[points.frame["class_id"] == 5][0])
    open_explorer(page, served["url"], f"?run={served['run_id']}&sample={sample}")
    wait_for_selected(page, sample)
    choose_class(page, "5")
    wait_for_url(page, "classes=5")
    wait_for_url(page, f"sample={sample}")
    shared = page.url
    assert "classes=5" in shared and f"sample={sample}" in shared and f"layout={key.params_hash}" in shared
    with checked_page(browser, served["server"]) as other:
        open_explorer(other, served["url"], shared[shared.index("?"):])
        wait_for_selected(other, sample)
        assert shown_count(other) == int((points.frame["class_id"] == 5).sum())
        shares = class_colour_shares(map_pixels(other), sorted(points.class_names))
        # class 5's points, plus the orange neighbour rings of the selected sample
        assert shares[5] > 0.5 and shares[5] == max(shares.values())
        assert other.problems == []


def test_k_slider_and_2d_neighbours(served, page):
    from scipy.spatial import cKDTree

    open_explorer(page, served["url"], f"?run={served['run_id']}&sample=7")
    wait_for_selected(page, 7)
    page.wait_for_selector(".lens-neighbours .lens-thumb", timeout=10_000)
    handle = page.locator(".noUi-handle").first
    handle.focus()
    for _ in range(5):
        handle.press("ArrowRight")
    deadline = time.monotonic() + 10
    while len(neighbour_ids_on_page(page)) != 15 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    key = default_key(served)
    graph = build_graph(served["lake"], served["run_id"], key.layer, key.pooling)
    assert neighbour_ids_on_page(page) == [int(i) for i in graph.of(7, 15)[0]]
    deadline = time.monotonic() + 10
    while page.evaluate(MARKER_ROLES_JS)[0].count("neighbour") != 15 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert page.evaluate(MARKER_ROLES_JS)[0].count("neighbour") == 15  # every neighbour ringed on the map
    page.get_by_role("button", name="2-D map").click()
    page.wait_for_selector(".lens-overlap", timeout=10_000)
    points = maps.points_for(served["lake"], key)
    xy = points.frame[["x", "y"]].to_numpy()
    row = int(points.rows_of([7])[0])
    _, rows = cKDTree(xy).query(xy[row], k=16)
    expected = [int(points.frame["sample_id"].iat[r]) for r in rows if r != row][:15]
    deadline = time.monotonic() + 10
    while neighbour_ids_on_page(page) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert neighbour_ids_on_page(page) == expected
    overlap = len(set(expected) & set(int(i) for i in graph.of(7, 15)[0]))
    assert page.locator(".lens-overlap").inner_text() == f"{overlap} of 15"
    assert page.problems == []


# --- a damaged lake, a link out of it, and an action that fails -------------------------------------------

@pytest.fixture(scope="module")
def damaged(paired_lake, tmp_path_factory):
    """A copy of the paired lake with a damaged and a foreign shard in every table, a samples shard that is
    a link to a file outside the lake, served with every shard write failing (an injected RuntimeError)."""
    from store.lake import chunk_name
    from tests.test_shards import TABLES, plant

    root = tmp_path_factory.mktemp("damaged")
    lake = root / "lake"
    shutil.copytree(paired_lake["lake"], lake)
    for table in TABLES:
        if table != "selections":  # there is none to copy; planted below
            plant(lake, table, "truncated")
            plant(lake, table, "foreign")
    (lake / "selections").mkdir()
    (lake / "selections" / "broken.parquet").write_bytes(b"PAR1 not really")
    student = paired_lake["student"]
    shutil.copy(lake / "samples" / student / chunk_name(0), root / "outside.parquet")
    (lake / "samples" / student / chunk_name(7)).symlink_to(root / "outside.parquet")
    server = Server(lake, env={"DMD2_LENS_FAILPOINT": "before-rename:1:error"})
    yield {"url": server.url, "lake": lake, "student": student, "server": server}
    server.stop()


def test_a_damaged_lake_opens_and_a_failed_action_is_a_notice(browser, damaged):
    import urllib.error
    import urllib.request

    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    open_explorer(page, damaged["url"], f"?run={damaged['student']}&sample=5")
    assert coloured_fraction(map_pixels(page)) > 0.002, "the map looks blank"
    assert shown_count(page) == 300
    with urllib.request.urlopen(f"{damaged['url']}/image/{damaged['student']}/0/0/thumb") as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:  # chunk 7 is a link out of the lake
        urllib.request.urlopen(f"{damaged['url']}/image/{damaged['student']}/7/0")
    assert err.value.code == 404
    page.locator("input[placeholder='name, e.g. odd-sevens']").fill("will-fail")
    page.locator("input[placeholder='name, e.g. odd-sevens']").press("Enter")
    page.get_by_role("button", name="Collect point").click()
    page.wait_for_timeout(300)
    page.get_by_role("button", name="Save selection (collected + box/lasso)").click()
    alert = page.wait_for_selector(".lens-alert", timeout=20_000)
    assert "failure injected" in alert.inner_text() and "did not work" in alert.inner_text()
    assert not (damaged["lake"] / "selections" / "will-fail.parquet").exists()
    for tab, ready in (("compare", ".lens-layer-table .tabulator-row"),
                       ("diversity", ".lens-diversity-table .tabulator-row")):
        page.goto(f"{damaged['url']}/explorer?tab={tab}")
        page.wait_for_selector(ready, timeout=60_000)
    log = damaged["server"].output()
    assert "skipping shard" in log and "outside the lake" in log
    assert "failure injected" in log  # the traceback stays in the server's log too
    assert problems == []
    context.close()


BAD_URLS = {  # URL parameters a person could paste or mistype, each answered by one notice on the page
    "sample beyond 64 bits": "sample=99999999999999999999999",
    "negative sample": "sample=-1",
    "class beyond 64 bits": "classes=99999999999999999999999",
    "class not a number": "classes=1e400",
    "step beyond 64 bits": "step=99999999999999999999",
    "unknown layout": "layout=zzz",
    "unknown run": "run=nope",
    "hostile layer": "layer=%3Cscript%3Ealert(1)%3C/script%3E",
    "unknown tab": "tab=x",
}


def lake_listing(lake: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(lake)), p.stat().st_size) for p in lake.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def bad_url_pages(browser, served):
    """Every BAD_URLS case opened at once, each in its own browser context (the server builds one session
    after another while the browser draws those already built): the pages by case, and the lake's files
    before any was opened."""
    before = lake_listing(served["lake"])
    logged = len(served["server"].output())
    pages = {case: recording_page(browser) for case in BAD_URLS}
    for case, page in pages.items():
        page.goto(f"{served['url']}/explorer?{BAD_URLS[case]}", wait_until="commit")
    for page in pages.values():
        wait_until_drawn(page)
    yield pages, before
    for page in pages.values():
        page.context.close()
    assert server_errors(served["server"].output()[logged:]) == []


@pytest.mark.parametrize("case", BAD_URLS)
def test_a_bad_url_parameter_is_one_notice_and_the_map_still_draws(served, bad_url_pages, case):
    pages, before = bad_url_pages
    page = pages[case]
    notices = page.locator(".lens-notice").all_inner_texts()
    assert len(notices) == 1 and notices[0].startswith("ignored URL parameter " + BAD_URLS[case].split("=")[0])
    assert coloured_fraction(map_pixels(page)) > 0.002, "the map looks blank"
    assert page.dialogs == [] and page.problems == []
    assert lake_listing(served["lake"]) == before
