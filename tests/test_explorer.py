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
from store import maps
from store.neighbours import build_graph
from store.synthetic import write_run
from tests.conftest import REPO, Server, checked_page, images_loaded, isolated_point

pytestmark = pytest.mark.browser

HOSTILE_PROMPT = "<script>alert(1)</script>"
HOSTILE_PROMPTS = [HOSTILE_PROMPT, "<img src=x onerror=alert(2)>", "a photo of a 'quoted\" cat"]
SCREENSHOT = REPO / ".cache" / "screenshots" / "explorer.png"

@pytest.fixture(scope="module")
def served(embedded_lake, tmp_path_factory):
    lake = tmp_path_factory.mktemp("served") / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    write_run(lake, "hostile", 600, HOSTILE_PROMPTS, tags=["<b>bold</b>", "plain"])
    server = Server(lake)
    yield {"url": server.url, "lake": lake, "run_id": embedded_lake["run_id"], "server": server}
    server.stop()


@pytest.fixture()
def page(browser, served):
    with checked_page(browser, served["server"]) as page:
        yield page


def open_explorer(page, url: str, query: str = "") -> None:
    page.goto(f"{url}/explorer{query}")
    page.wait_for_selector(".lens-shown", timeout=60_000)
    page.wait_for_function(f"() => ({PLOT_GEOMETRY_JS})() !== null", timeout=60_000)
    page.wait_for_timeout(500)


def shown_count(page) -> int:
    return int(page.locator(".lens-shown").inner_text().replace(",", ""))


def map_pixels(page) -> np.ndarray:
    import io

    from PIL import Image

    g = page.evaluate(PLOT_GEOMETRY_JS)
    clip = {"x": g["left"], "y": g["top"], "width": g["width"], "height": g["height"]}
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"))


def click_point(page, x: float, y: float) -> None:
    g = page.evaluate(PLOT_GEOMETRY_JS)
    px = g["left"] + (x - g["x0"]) / (g["x1"] - g["x0"]) * g["width"]
    py = g["top"] + (g["y1"] - y) / (g["y1"] - g["y0"]) * g["height"]
    page.mouse.click(px, py)


def click_until_selected(page, x: float, y: float, sample_id: int, attempts: int = 3) -> None:
    """Click the point; a click that lands while the page is still syncing its first render can be
    dropped by the browser, so click again, as a user would (every attempt must pick this sample)."""
    for attempt in range(attempts):
        click_point(page, x, y)
        try:
            page.wait_for_selector(f".lens-selected-sample[data-sample='{sample_id}']", timeout=8_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise


def wait_for_selected(page, sample_id: int) -> None:
    page.wait_for_selector(f".lens-selected-sample[data-sample='{sample_id}']", timeout=20_000)


def neighbour_ids_on_page(page) -> list[int]:
    return [int(s) for s in page.locator(".lens-neighbours .lens-thumb").evaluate_all(
        "els => els.map(e => e.dataset.sample)")]


def test_page_loads_and_draws_the_map(served, page):
    open_explorer(page, served["url"])
    pixels = map_pixels(page)
    coloured = (np.abs(pixels.astype(int) - 255).sum(2) > 60).mean()
    assert coloured > 0.002, "the map looks blank"
    assert shown_count(page) == 300
    assert page.problems == []


def test_class_filter_changes_the_count(served, page):
    open_explorer(page, served["url"])
    before = shown_count(page)
    choice = page.locator(".choices__input--cloned").first
    choice.click()
    choice.press_sequentially("3: 3", delay=50)
    page.keyboard.press("Enter")
    deadline = time.monotonic() + 20
    while shown_count(page) == before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    after = shown_count(page)
    chosen = page.locator(".choices__list--multiple .choices__item").first.get_attribute("data-value")
    key = next(k for k in maps.list_layouts(served["lake"]) if k.run_id == served["run_id"])
    points = maps.points_for(served["lake"], key)
    assert 0 < after < before
    assert chosen.startswith("3: ")  # the search found class 3
    assert after == int((points.frame["class_id"] == 3).sum())
    assert page.problems == []


def best_separated_layout(lake: Path, run_id: str) -> maps.LayoutKey:
    """The run's layout whose 2-D map keeps classes apart best (10-NN class purity on the map)."""
    from sklearn.neighbors import NearestNeighbors

    def purity(key: maps.LayoutKey) -> float:
        frame = maps.load_points(lake, key).frame
        _, rows = NearestNeighbors(n_neighbors=11).fit(frame[["x", "y"]]).kneighbors(frame[["x", "y"]])
        labels = frame["class_id"].to_numpy()
        return float((labels[rows[:, 1:]] == labels[:, None]).mean())

    return max((k for k in maps.list_layouts(lake) if k.run_id == run_id), key=purity)


def test_click_shows_the_point_and_its_true_neighbours(served, page):
    key = best_separated_layout(served["lake"], served["run_id"])  # also the README's screenshot
    open_explorer(page, served["url"], f"?run={served['run_id']}&layer={key.layer}")
    points = maps.points_for(served["lake"], key)
    row = isolated_point(points, np.random.default_rng(0))
    sample = int(points.frame["sample_id"].iat[row])
    click_until_selected(page, float(points.frame["x"].iat[row]), float(points.frame["y"].iat[row]), sample)
    page.wait_for_selector(".lens-neighbours .lens-thumb", timeout=10_000)
    graph = build_graph(served["lake"], served["run_id"], key.layer, key.pooling)
    expected, _ = graph.of(sample, 10)
    assert neighbour_ids_on_page(page) == [int(i) for i in expected]
    page.wait_for_timeout(1000)
    assert images_loaded(page, ".lens-neighbours .lens-thumb img")
    assert images_loaded(page, ".lens-selected-sample img")
    assert page.problems == []
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)  # the README's picture (`make screenshot`)


def test_switching_layers_keeps_the_selection(served, page):
    keys = [k for k in maps.list_layouts(served["lake"]) if k.run_id == served["run_id"]]
    first = keys[0]
    points = maps.points_for(served["lake"], first)
    sample = int(points.frame["sample_id"].iat[7])
    open_explorer(page, served["url"], f"?run={served['run_id']}&layer={first.layer}&sample={sample}")
    wait_for_selected(page, sample)
    other = next(k for k in keys if k.layer != first.layer)
    page.locator("select").nth(1).select_option(other.layer)
    deadline = time.monotonic() + 20
    graph = build_graph(served["lake"], served["run_id"], other.layer, other.pooling)
    expected = [int(i) for i in graph.of(sample, 10)[0]]
    while neighbour_ids_on_page(page) != expected and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    wait_for_selected(page, sample)
    assert neighbour_ids_on_page(page) == expected
    assert page.problems == []


def test_hostile_prompts_are_shown_as_text(served, page):
    open_explorer(page, served["url"], "?run=hostile&sample=0")
    wait_for_selected(page, 0)
    legend = page.locator(".lens-legend-rows").inner_text()
    assert HOSTILE_PROMPT in legend and "<img src=x onerror=alert(2)>" in legend
    meta = page.locator(".lens-selected-sample").inner_text()
    assert any(p in meta for p in HOSTILE_PROMPTS)
    assert "<b>bold</b>" in meta or "plain" in meta
    page.locator("input[placeholder='any prompt']").fill("script")
    page.keyboard.press("Enter")
    page.wait_for_timeout(1500)
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


def test_recompute_layout_runs_in_the_background_and_is_saved(served, page):
    open_explorer(page, served["url"], f"?run={served['run_id']}&classes=1,7")
    subset = shown_count(page)
    assert 0 < subset < 300
    before = set(maps.list_layouts(served["lake"]))
    page.get_by_role("button", name="Recompute layout on filtered points").click()
    page.wait_for_selector(".lens-recompute-status", timeout=10_000)
    page.wait_for_selector(".lens-recompute-done", timeout=240_000)
    new = set(maps.list_layouts(served["lake"])) - before
    assert len(new) == 1
    key = new.pop()
    assert len(maps.load_points(served["lake"], key)) == subset
    deadline = time.monotonic() + 20
    while f"{subset} points" not in page.locator(".lens-model").inner_text() and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    assert f"{subset} points" in page.locator(".lens-model").inner_text()  # the new layout is shown
    assert page.problems == []


def test_malformed_url_parameters_are_ignored_with_a_notice(served):
    from dashboards.explorer import Explorer

    explorer = Explorer(str(served["lake"]), {"run": "../../etc", "layer": "<b>x</b>", "sample": "1e9'",
                                              "classes": "3,drop", "step": "-1"})
    notices = explorer.notices.object
    assert notices.count("lens-notice") == 4  # run, layer, sample, classes (step falls back silently)
    assert "&lt;b&gt;x&lt;/b&gt;" in notices and "<b>x</b>" not in notices
    assert explorer.selected_id is None and explorer.classes.value == []
    assert int(explorer.keep.sum()) == len(explorer.points)


def test_box_selection_opens_a_gallery_and_exports(served):
    import io

    import pandas as pd

    from dashboards.explorer import GALLERY_PAGE, Explorer

    explorer = Explorer(str(served["lake"]), {"run": "hostile"})
    xy = explorer.points.frame[["x", "y"]].to_numpy()
    explorer._on_box(bounds=(xy[:, 0].min(), xy[:, 1].min(), np.median(xy[:, 0]), xy[:, 1].max()))
    selected = len(explorer.region_rows)
    assert 0 < selected < len(explorer.points)
    assert f">{selected:,}<" in explorer.gallery_info.object
    assert explorer.gallery.object.count("class='lens-thumb'") == min(selected, GALLERY_PAGE)
    assert "&lt;script&gt;" in explorer.gallery_info.object + explorer.gallery.object
    exported = pd.read_csv(io.BytesIO(explorer._region_export("csv").getvalue()), keep_default_na=False)
    assert len(exported) == selected and set(exported["prompt"]) <= set(HOSTILE_PROMPTS)


def test_a_selection_made_in_the_browser_is_read_back_in_python(served, page):
    from store.selections import read_selection

    run_id = served["run_id"]
    open_explorer(page, served["url"], f"?run={run_id}&sample=7")
    wait_for_selected(page, 7)
    page.wait_for_selector(".lens-neighbours .lens-thumb", timeout=10_000)
    neighbours = neighbour_ids_on_page(page)
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
        explorer = page_.explorer
        explorer.select_sample(int(explorer.points.frame["sample_id"].iat[3]))
        explorer._collect(explorer.neighbour_ids)
        selected = explorer.selection()
        assert sorted(selected["sample_id"]) == sorted(explorer.neighbour_ids)
        source = explorer.neighbour_view.object.split("src='", 1)[1].split("'", 1)[0]
        assert source.startswith("data:image/")  # no image route in a notebook
        assert base64.b64decode(source.split(",", 1)[1])[:4] in (b"\x89PNG", b"RIFF")
    finally:
        inline_images(None)


def test_trajectories_follow_the_selection_and_are_thinned(paired_lake, monkeypatch):
    import dashboards.explorer as explorer_module
    from dashboards.explorer import Explorer

    lake = str(paired_lake["lake"])
    teacher = Explorer(lake, {"run": paired_lake["teacher"]})
    teacher.select_sample(5)
    teacher.show_paths.value = True
    assert "data-kind='steps'" in teacher.paths_info.object and "step 0 → step 7" in teacher.paths_info.object
    assert len(teacher.paths.data) == 1 and teacher.paths.data[0].shape == (2, 2)
    monkeypatch.setattr(explorer_module, "MAX_PATHS", 50)
    xy = teacher.points.frame[["x", "y"]].to_numpy()
    teacher._on_box(bounds=(xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()))
    assert len(teacher.paths.data) == 50 and "a random 50 of 300" in teacher.paths_info.object
    student = Explorer(lake, {"run": paired_lake["student"]})
    student.select_sample(5)
    student.show_paths.value = True
    assert "data-kind='layers'" in student.paths_info.object and student.paths.data[0].shape == (3, 2)
    student.show_paths.value = False
    assert student.paths.data == []


PATHS_JS = """
() => {
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      if (m.type === 'GlyphRenderer' && m.glyph.type === 'MultiLine') return m.data_source.data.xs.map(p => p.length);
    }
  }
  return null;
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
