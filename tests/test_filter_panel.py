"""The filters and the legend: the mask is the store's, counts per category are exact, numeric
colourings get a colour bar, and every label is escaped."""

from __future__ import annotations

import numpy as np

from dashboards.filter_panel import FilterPanel, legend_html
from dashboards.render import category_colour
from store import catalogue, maps


def test_filters_mask_counts_and_legend(hostile_lake):
    lake = hostile_lake["lake"]
    heard = []
    panel = FilterPanel(on_filter=lambda: heard.append("filter"), on_colour=heard.append, on_fit=lambda: None)
    points = maps.points_for(lake, next(k for k in catalogue.list_layouts(lake) if k.run_id == "hostile"))
    panel.follow_layout(points)
    assert panel.classes.visible is False  # a prompt run has no classes to pick
    panel.prompt.value = "script"
    assert heard == ["filter"]
    keep = panel.mask(points)
    assert np.array_equal(keep, points.mask([], "script", ""))
    panel.show_counts(points, keep)
    assert f">{int(keep.sum()):,}</b> of {len(points):,}" in panel.count.object
    legend = panel.legend.object
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in legend and "<script>" not in legend
    assert f"({int(keep.sum()):,})" in legend  # the one prompt left, with its exact count
    panel.colour.value = "density"
    assert heard[-1] == "density"
    assert "lens-colour-bar" in legend_html(points, keep, "density")


def test_legend_counts_and_colours_per_class(embedded_lake):
    lake = embedded_lake["lake"]
    points = maps.points_for(lake, catalogue.list_layouts(lake)[0])
    keep = np.isin(points.frame["class_id"], [2, 5])
    legend = legend_html(points, keep, "label")
    for cid in (2, 5):
        n = int((points.frame["class_id"] == cid).sum())
        assert f"{category_colour(cid)}'></span>{cid} <span class='lens-legend-count'>({n:,})" in legend
    assert legend.count("swatch") == 2  # classes with no shown point are left out


# --- in the browser: what the user sees of each widget (a real `panel serve` on the hostile lake) -------------

import colorsys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from dashboards.browser import coloured_fraction, map_pixels, plot_geometries  # noqa: E402
from tests.test_explorer import (default_key, open_explorer, page, shown_count,  # noqa: E402,F401
                                 wait_for_pixels_to_change)


def colour_rgb(code: int) -> np.ndarray:
    colour = category_colour(int(code))
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])


def hue_bins(pixels: np.ndarray, width: float = 20, floor: float = 0.01) -> set[int]:
    """The hue bins (`width` degrees each) holding at least `floor` of a map's clearly coloured pixels: about
    one per class colour when coloured by class, a few reds to yellows for density."""
    flat = pixels.reshape(-1, 3).astype(float) / 255
    chromatic = flat[(flat.max(1) - flat.min(1)) > 0.15]
    hues = np.array([colorsys.rgb_to_hsv(*p)[0] * 360 for p in chromatic[:: max(1, len(chromatic) // 20000)]])
    counts = np.bincount((hues // width).astype(int) % int(360 // width), minlength=int(360 // width))
    return {int(b) for b in np.flatnonzero(counts >= floor * len(hues))}


def near_colour(pixels: np.ndarray, rgb: np.ndarray, tolerance: int = 12) -> np.ndarray:
    return np.abs(pixels.astype(int) - rgb).sum(2) <= tolerance


def colour_shares(pixels: np.ndarray, rgbs: list[np.ndarray]) -> np.ndarray:
    """The share of a map's clearly coloured pixels nearest to each of these colours."""
    flat = pixels.reshape(-1, 3).astype(int)
    chromatic = flat[(flat.max(1) - flat.min(1)) > 40]
    if not len(chromatic):
        return np.zeros(len(rgbs))
    nearest = np.argmin(((chromatic[:, None, :] - np.array(rgbs)[None]) ** 2).sum(2), axis=1)
    return np.bincount(nearest, minlength=len(rgbs)) / len(chromatic)


def legend_text(page) -> str:
    """The legend as the user reads it: the category key or the colour bar."""
    return "\n".join(page.locator(".lens-legend-rows, .lens-colour-bar").all_inner_texts())


def wait_for_text(locator_text, wanted, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    text = locator_text()
    while not wanted(text) and time.monotonic() < deadline:
        time.sleep(0.2)
        text = locator_text()
    return text


def pixel_positions(page, frame) -> tuple[np.ndarray, np.ndarray]:
    """Where the layout's points lie in the map's own pixels (as `map_pixels` returns them)."""
    g = plot_geometries(page)[0]
    px = (frame["x"].to_numpy() - g["x0"]) / (g["x1"] - g["x0"]) * g["width"]
    py = (g["y1"] - frame["y"].to_numpy()) / (g["y1"] - g["y0"]) * g["height"]
    return px, py


def coloured_near(pixels: np.ndarray, px: np.ndarray, py: np.ndarray, radius: int = 3) -> np.ndarray:
    """For each position: whether a clearly drawn pixel lies within `radius` pixels of it."""
    drawn = np.abs(pixels.astype(int) - 255).sum(2) > 60
    h, w = drawn.shape
    out = np.zeros(len(px), dtype=bool)
    for i, (x, y) in enumerate(zip(px.astype(int), py.astype(int))):
        if 0 <= x < w and 0 <= y < h:
            out[i] = drawn[max(0, y - radius):y + radius + 1, max(0, x - radius):x + radius + 1].any()
    return out


@pytest.mark.browser
def test_colour_by_changes_the_maps_colours_and_the_legend(served, page):
    """Each colouring of the digits run draws different colours, and the legend says which: a class key, a
    fire colour bar for density, the audit's colour bar; back to classes, the class colours return."""
    open_explorer(page, served["url"], f"?run={served['run_id']}")
    points = maps.points_for(served["lake"], default_key(served))
    select = page.locator("select:has(option:text-is('density'))")
    by_class = map_pixels(page)
    classes = sorted(points.class_names)
    assert len(hue_bins(by_class)) >= 6  # about one hue per class colour
    for cid in classes:  # each class is drawn in its own palette colour
        if cid != 7:  # (class 7's palette colour is grey)
            assert near_colour(by_class, colour_rgb(cid)).sum() > 20, cid
    legend = legend_text(page)
    assert all(f"{c} ({int((points.frame['class_id'] == c).sum()):,})" in legend for c in classes), legend

    select.select_option(label="density")
    density = wait_for_pixels_to_change(page, by_class)
    bins = hue_bins(density)
    assert bins and max(bins) <= 3 and len(bins) <= 4, bins  # reds to yellows (hue 0-80 degrees) only
    assert sum(near_colour(density, colour_rgb(c)).sum() for c in classes if c not in (1, 7)) < 50  # no class colour
    assert coloured_fraction(density) == pytest.approx(coloured_fraction(by_class), rel=0.25)  # the same points
    legend = wait_for_text(lambda: legend_text(page), lambda t: "points per pixel" in t)
    assert "points per pixel (histogram-equalised)" in legend and "fewest" in legend and "(30)" not in legend

    select.select_option(label="neighbour audit (k-NN overlap)")
    audit = wait_for_pixels_to_change(page, density)
    assert hue_bins(audit) != bins
    legend = wait_for_text(lambda: legend_text(page), lambda t: "neighbour audit" in t)
    assert "share of raw-space neighbours kept on the map" in legend

    select.select_option(label="class / prompt")
    again = wait_for_pixels_to_change(page, audit)
    assert np.abs(again.astype(int) - by_class.astype(int)).sum(2).astype(bool).mean() < 0.002  # as it was
    legend = wait_for_text(lambda: legend_text(page), lambda t: "(" in t and "neighbour audit" not in t)
    assert all(f"{c} ({int((points.frame['class_id'] == c).sum()):,})" in legend for c in classes)
    assert page.problems == []


@pytest.mark.browser
def test_colour_by_tag_draws_each_tag_in_its_colour_and_names_it_as_text(served, page):
    open_explorer(page, served["url"], "?run=hostile")
    key = next(k for k in catalogue.list_layouts(served["lake"]) if k.run_id == "hostile")
    points = maps.points_for(served["lake"], key)
    tags = list(points.frame["tags"].cat.categories)
    codes = points.colour_codes("tags")
    before = map_pixels(page)
    page.locator("select:has(option:text-is('tag'))").select_option(label="tag")
    after = wait_for_pixels_to_change(page, before)
    px, py = pixel_positions(page, points.frame)
    h, w = after.shape[:2]
    rgbs = np.array([colour_rgb(c) for c in codes])
    for i, tag in enumerate(tags):  # each tag's points are drawn in that tag's colour (the nearer of the two)
        rows = np.flatnonzero((points.frame["tags"] == tag).to_numpy())
        rows = rows[(px[rows] >= 0) & (px[rows] < w) & (py[rows] >= 0) & (py[rows] < h)]
        drawn = after[py[rows].astype(int), px[rows].astype(int)].astype(int)
        nearest = np.argmin(((drawn[:, None, :] - rgbs[None]) ** 2).sum(2), axis=1)
        assert len(rows) > 100 and (nearest == i).mean() > 0.95, (tag, (nearest == i).mean())
    shares = colour_shares(after, list(rgbs))
    assert shares.min() > 0.2, shares  # both tags' colours fill the map
    legend = wait_for_text(lambda: legend_text(page), lambda t: "plain" in t)
    counts = points.frame["tags"].value_counts()
    assert f"<b>bold</b> ({counts['<b>bold</b>']:,})" in legend  # the hostile tag, as characters
    assert f"plain ({counts['plain']:,})" in legend
    assert page.locator(".lens-legend-rows b").count() == 0  # the tag made no element
    assert page.problems == [] and page.dialogs == []


@pytest.mark.browser
def test_tag_filter_draws_only_the_kept_points(served, page):
    """Typing a tag keeps its points: the count, the legend and the picture agree (the view fits them), and
    zoomed out, the dropped points' cluster stays blank while the kept ones are drawn."""
    open_explorer(page, served["url"], "?run=hostile")
    key = next(k for k in catalogue.list_layouts(served["lake"]) if k.run_id == "hostile")
    points = maps.points_for(served["lake"], key)
    frame = points.frame
    keep = points.mask([], "", "<b>")
    dropped_prompts = set(frame["prompt"][~keep]) - set(frame["prompt"][keep])
    assert 0 < keep.sum() < len(frame) and dropped_prompts
    label_codes = dict(zip(frame["label"].cat.categories, points.colour_codes("label")))
    rgbs = [colour_rgb(c) for c in label_codes.values()]
    dropped = [list(label_codes).index(p) for p in dropped_prompts]
    before = map_pixels(page)
    assert colour_shares(before, rgbs)[dropped].sum() > 0.2
    box = page.locator("input[placeholder='any tag']")
    box.fill("<b>")
    box.press("Enter")
    after = wait_for_pixels_to_change(page, before)
    assert shown_count(page) == int(keep.sum())
    legend = legend_text(page)
    assert all(p not in legend for p in dropped_prompts)  # the dropped prompt is gone from the key
    assert all(f"{p} ({int((frame['prompt'][keep] == p).sum()):,})" in legend for p in set(frame["prompt"][keep]))
    assert colour_shares(after, rgbs)[dropped].sum() < 0.005  # and from the picture
    g = plot_geometries(page)[0]  # the view fits the kept points
    xs = frame["x"].to_numpy()[keep]
    assert g["x0"] <= xs.min() and g["x1"] >= xs.max() and (g["x1"] - g["x0"]) <= 1.2 * (xs.max() - xs.min())
    px, py = pixel_positions(page, frame)
    assert coloured_near(after, px[keep], py[keep]).mean() > 0.98  # every kept point is drawn
    # zoomed out until every point is in view: the dropped points are not drawn, the kept ones are
    for _ in range(12):
        g = plot_geometries(page)[0]
        page.mouse.move(g["left"] + g["width"] / 2, g["top"] + g["height"] / 2)
        page.mouse.wheel(0, 400)
        page.wait_for_timeout(150)
        g = plot_geometries(page)[0]
        ys = frame["y"].to_numpy()
        if g["x0"] < frame["x"].min() and g["x1"] > frame["x"].max() and g["y0"] < ys.min() and g["y1"] > ys.max():
            break
    page.mouse.move(5, 5)
    assert g["x0"] < frame["x"].min() and g["x1"] > frame["x"].max() and g["y0"] < ys.min() and g["y1"] > ys.max()
    zoomed = wait_for_pixels_to_change(page, after)
    px, py = pixel_positions(page, frame)
    drawn = coloured_near(zoomed, px, py, radius=1)
    assert drawn[keep].mean() > 0.98 and drawn[~keep].mean() < 0.02, (drawn[keep].mean(), drawn[~keep].mean())
    assert page.problems == [] and page.dialogs == []
