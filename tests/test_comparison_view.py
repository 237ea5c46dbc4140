"""The comparison tab on the paired digits lake (student against teacher): the per-layer chart (with the
chance level of k-NN Jaccard) and table, both runs' layouts linked side by side, and most-changed samples
opening both images; then in the browser."""

from __future__ import annotations

import time

import holoviews as hv
import numpy as np
import pytest

from dashboards.browser import ALL_PLOTS_JS, RASTER_SPANS_JS
from dashboards.comparison_view import ComparisonView, chance_jaccard, describe_comparison
from store import catalogue, connect
from tests.conftest import DIGITS_LAYERS, REPO, images_loaded

SCREENSHOT = REPO / ".cache" / "screenshots" / "compare.png"


@pytest.fixture(scope="module")
def view(paired_lake):
    lake = str(paired_lake["lake"])
    return ComparisonView(lake, connect(lake), catalogue.list_layouts(lake))


def choose(view, step_b: int) -> None:
    view.choice.value = next(i for i, c in enumerate(view.comparisons) if c["step_b"] == step_b)


def test_layers_in_capture_order_with_the_stored_figures(view, paired_lake):
    assert {(c["run_a"], c["run_b"], c["step_a"]) for c in view.comparisons} == {
        (paired_lake["student"], paired_lake["teacher"], 0)}
    assert len(view.comparisons) == 2  # steps 0/0 and each run's last step
    choose(view, 0)
    stored = dict(((layer, (j, c)) for layer, j, c in connect(paired_lake["lake"]).sql(
        "SELECT layer, mean_knn_jaccard, linear_cka FROM comparisons WHERE step_b = 0").fetchall()))
    table = view.layers.value
    assert table["layer"].tolist() == DIGITS_LAYERS.split(",")
    for layer, jaccard, cka in zip(table["layer"], table["Jaccard (k=10)"], table["CKA"]):
        assert jaccard == pytest.approx(stored[layer][0], abs=5e-4) and cka == pytest.approx(stored[layer][1], abs=5e-4)


def simulated_jaccard(k: int, n: int, trials: int, rng) -> float:
    """Mean Jaccard overlap of two k-subsets of the n - 1 other samples, each drawn uniformly."""
    totals = []
    for _ in range(trials // 20_000):
        a = np.argsort(rng.random((20_000, n - 1)), axis=1)[:, :k]
        b = np.argsort(rng.random((20_000, n - 1)), axis=1)[:, :k]
        shared = (a[:, :, None] == b[:, None, :]).sum(axis=(1, 2))
        totals.append(shared / (2 * k - shared))
    return float(np.concatenate(totals).mean())


@pytest.mark.parametrize("k, n", [(10, 300), (5, 40), (3, 12)])
def test_chance_jaccard_matches_random_neighbourhoods(k, n):
    simulated = simulated_jaccard(k, n, 200_000, np.random.default_rng(k * n))
    assert chance_jaccard(k, n) == pytest.approx(simulated, rel=0.02)
    overlap = k * k / (n - 1)  # near the ratio at the mean overlap, and a little above it (convexity)
    assert overlap / (2 * k - overlap) < chance_jaccard(k, n) < (1 + 1 / k) * overlap / (2 * k - overlap)
    assert chance_jaccard(10, 11) == 1.0 and chance_jaccard(10, 2) == 1.0  # every other sample a neighbour


def curves(view) -> dict[str, hv.Curve]:
    return {element.label: element for element in view.chart.object if isinstance(element, hv.Curve)}


def test_the_chart_draws_the_stored_figures_by_layer_with_the_chance_level(view, paired_lake):
    choose(view, 0)
    stored = connect(paired_lake["lake"]).sql(
        "SELECT layer, mean_knn_jaccard, linear_cka, samples, k FROM comparisons WHERE step_b = 0").df()
    stored = stored.set_index("layer").loc[DIGITS_LAYERS.split(",")]  # capture order
    drawn = curves(view)
    k, n = int(stored["k"].iat[0]), int(stored["samples"].iat[0])
    chance = next(label for label in drawn if "chance" in label)
    assert set(drawn) == {"linear CKA", f"k-NN Jaccard (k={k})", chance}
    for label, column in (("linear CKA", "linear_cka"), (f"k-NN Jaccard (k={k})", "mean_knn_jaccard")):
        assert drawn[label].data["layer"].tolist() == DIGITS_LAYERS.split(",")
        assert np.allclose(drawn[label].data["value"], stored[column], atol=1e-9)
    assert np.allclose(drawn[chance].data["value"], chance_jaccard(k, n), atol=1e-12)
    assert f"{chance_jaccard(k, n):.3f}" in chance  # its value is written in the legend
    hv.extension("bokeh")
    figure = hv.render(view.chart.object, backend="bokeh")
    assert list(figure.x_range.factors) == DIGITS_LAYERS.split(",")
    assert (figure.y_range.start, figure.y_range.end) == (0, 1)
    dashed = [r for r in figure.renderers if getattr(r.glyph, "line_dash", None) == [6]]
    assert len(dashed) == 1 and set(dashed[0].data_source.data["value"]) == {chance_jaccard(k, n)}
    assert "lens-compare-chart" in view.chart.css_classes


def test_the_comparison_dropdown_fits_its_longest_option(view):
    longest = max(len(describe_comparison(c)) for c in view.comparisons)
    assert view.choice.width >= min(700, 7 * longest)


def test_a_layer_shows_both_runs_linked(view, paired_lake):
    choose(view, 0)
    view.show_layer(2)
    layer = DIGITS_LAYERS.split(",")[2]
    keys = [p.points.key for p in view.linked.panels]
    assert [(k.run_id, k.layer, k.step) for k in keys] == [(paired_lake["student"], layer, 0),
                                                          (paired_lake["teacher"], layer, 0)]
    assert f"data-layer='{layer}'" in view.status.object
    most_changed = connect(paired_lake["lake"]).sql(
        "SELECT most_changed FROM comparisons WHERE layer = $l AND step_b = 0", params={"l": layer}).fetchall()[0][0]
    assert view.changed.value["sample"].tolist() == list(most_changed)
    view.show_pair(0)
    sample = most_changed[0]
    pair = view.pair.object
    assert f"data-run='{paired_lake['student']}' data-sample='{sample}'" in pair
    assert f"data-run='{paired_lake['teacher']}' data-sample='{sample}'" in pair
    assert view.linked.selected_id == sample  # and selected on both maps


def test_a_missing_layout_is_named_with_the_command_that_makes_it(paired_lake):
    lake = str(paired_lake["lake"])
    without_teacher_step0 = [k for k in catalogue.list_layouts(lake)
                             if not (k.run_id == paired_lake["teacher"] and k.step == 0)]
    view = ComparisonView(lake, connect(lake), without_teacher_step0)
    choose(view, 0)
    view.show_layer(0)
    assert "no layout of" in view.status.object and "store embed" in view.status.object
    assert view.linked.panels == [] and len(view.changed.value) == 20  # the tables still work


@pytest.mark.browser
def rasters_span_their_views(page) -> bool:
    spans = page.evaluate(RASTER_SPANS_JS)
    return bool(spans) and all(abs(r0 - x0) <= 0.01 * (x1 - x0) and abs(r1 - x1) <= 0.01 * (x1 - x0)
                               for x0, x1, r0, r1 in spans)


def test_compare_tab_in_the_browser(paired_server, paired_page):
    page = paired_page
    page.goto(f"{paired_server['url']}/explorer?tab=compare")
    page.wait_for_selector(".lens-layer-table .tabulator-row", timeout=60_000)
    rows = page.locator(".lens-layer-table .tabulator-row")
    assert rows.count() == 3
    last = DIGITS_LAYERS.split(",")[-1]
    rows.nth(2).locator(".tabulator-cell[tabulator-field='layer']").click()
    page.wait_for_selector(f".lens-layer-figures[data-layer='{last}']", timeout=20_000)
    chart = page.locator(".lens-compare-chart").bounding_box()

    def maps() -> list[dict]:  # every plot but the chart by layer
        def in_chart(p: dict) -> bool:
            return (chart["x"] <= p["left"] <= chart["x"] + chart["width"]
                    and chart["y"] <= p["top"] <= chart["y"] + chart["height"])
        return [p for p in page.evaluate(ALL_PLOTS_JS) if not in_chart(p)]

    deadline = time.monotonic() + 30
    while len(maps()) != 2 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert len(maps()) == 2  # student and teacher maps of the clicked layer
    deadline = time.monotonic() + 10  # each map's raster spans its own view (no map takes another's range)
    while not rasters_span_their_views(page) and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    spans = page.evaluate(RASTER_SPANS_JS)
    assert len(spans) == 2 and rasters_span_their_views(page), spans
    assert len(page.evaluate(ALL_PLOTS_JS)) == 3  # and the chart
    assert page.locator(".lens-compare-chart canvas").count() >= 1
    sample = connect(paired_server["lake"]).sql(
        "SELECT most_changed[1] FROM comparisons WHERE layer = $l AND step_b = 0", params={"l": last}).fetchall()[0][0]
    first_changed = page.locator(".lens-changed-table .tabulator-row").first
    first_sample = first_changed.locator(".tabulator-cell[tabulator-field='sample']")
    deadline = time.monotonic() + 20  # the table follows the clicked layer
    while first_sample.inner_text().replace(",", "") != str(sample) and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    first_changed.locator(".tabulator-cell[tabulator-field='class or prompt']").click()
    page.wait_for_selector(f".lens-pair[data-sample='{sample}']", timeout=20_000)
    assert page.locator(".lens-pair figure").count() == 2
    page.wait_for_selector(f".lens-linked-selection .lens-selected-sample[data-sample='{sample}']", timeout=20_000)
    page.wait_for_timeout(800)
    assert images_loaded(page, ".lens-pair img")
    assert page.problems == []
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)  # the README's second picture (`make screenshot`)


# --- hostile class names in the Compare runs tab, in the browser ---------------------------------------------

HOSTILE_NAMES = {0: "<img src=x onerror=alert(5)>", 1: "<script>alert(6)</script>", 2: "<b>bold</b>"}


def write_hostile_pair(lake) -> None:
    """Two paired runs (`pair-a`, `pair-b`) of 120 samples in three classes named with HTML/JS, compared, their
    diversity measured (with near-duplicate pairs) and laid out: the Compare and Diversity tabs' inputs."""
    from store.compare import compare_runs
    from store.diversity import diversity
    from store.embed import embed_run
    from tests.small_lake import write_vectors_run

    rng = np.random.default_rng(0)
    classes = np.repeat([0, 1, 2], 40)
    centres = rng.normal(size=(3, 16)) * 3
    a = centres[classes] + rng.normal(size=(120, 16))
    b = a + 0.8 * rng.normal(size=(120, 16))
    for c in range(3):  # a near-duplicate pair in every class
        a[40 * c + 1] = a[40 * c] + 1e-3 * rng.normal(size=16)
    for run_id, vectors in (("pair-a", a), ("pair-b", b)):
        write_vectors_run(lake, run_id, {"l": vectors.astype(np.float32)}, classes, names=HOSTILE_NAMES)
        with_images(lake, run_id)
    compare_runs(lake, "pair-a", "pair-b")
    for run_id in ("pair-a", "pair-b"):
        diversity(lake, run_id, "l", threshold=0.05)
        embed_run(str(lake), run_id, progress=False)


def with_images(lake, run_id: str) -> None:
    """Give a test run's samples (written without images) a small PNG each, in place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from store.synthetic import tile_png

    for shard in sorted((lake / "samples" / run_id).glob("*.parquet")):
        table = pq.read_table(shard)
        pngs = pa.array([tile_png(int(c)) for c in table.column("class_id").to_pylist()], pa.binary())
        table = table.set_column(table.schema.get_field_index("image_png"), table.schema.field("image_png"), pngs)
        pq.write_table(table, shard)


def shown_as_text(page) -> None:
    """No element was made of the hostile names, no script ran, no page error."""
    from tests.test_explorer import INJECTED_JS

    assert page.evaluate(INJECTED_JS) == [], (page.evaluate(INJECTED_JS), page.dialogs)
    assert page.dialogs == []
    assert page.problems == []


@pytest.mark.browser
def test_hostile_class_names_are_text_in_the_compare_tab(browser, hostile_pair_server):
    from tests.conftest import checked_page

    with checked_page(browser, hostile_pair_server["server"]) as page:
        page.goto(f"{hostile_pair_server['url']}/explorer?tab=compare")
        page.wait_for_selector(".lens-layer-table .tabulator-row", timeout=60_000)
        layer_cell = ".lens-layer-table .tabulator-row .tabulator-cell[tabulator-field='layer']"
        page.locator(layer_cell).first.click()
        page.wait_for_selector(".lens-layer-figures[data-layer='l']", timeout=20_000)
        page.wait_for_selector(".lens-changed-table .tabulator-row", timeout=20_000)
        cells = page.locator(".lens-changed-table .tabulator-cell[tabulator-field='class or prompt']")
        page.wait_for_timeout(500)
        labels = cells.all_inner_texts()
        assert labels and set(labels) <= {f"{c}: {n}" for c, n in HOSTILE_NAMES.items()}, labels  # as characters
        first = cells.first
        label = first.inner_text()
        first.click()
        page.wait_for_selector(".lens-pair figure", timeout=20_000)
        captions = page.locator(".lens-pair figcaption").all_inner_texts()
        assert len(captions) == 2 and all(c.endswith(label) for c in captions), captions
        page.wait_for_timeout(1000)
        assert images_loaded(page, ".lens-pair img")
        page.locator(".choices__input--cloned").first.click()  # the linked maps' class list, opened
        page.wait_for_timeout(500)
        listed = page.locator(".choices__list--dropdown .choices__item--choice >> visible=true").all_inner_texts()
        assert sorted(listed) == sorted(f"{c}: {n}" for c, n in HOSTILE_NAMES.items()), listed
        page.keyboard.press("Escape")
        page.wait_for_timeout(500)
        shown_as_text(page)
