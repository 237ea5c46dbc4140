"""Rasters and the escaped HTML helpers every view draws with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboards.render import (BACKGROUND_GREY, PALETTE_RGBA, category_colour, choice_options, colour_bar, esc,
                               home_range, marker_key, shade)


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = pd.Categorical.from_codes(rng.integers(0, 3, n), categories=["a", "b", "c"])
    return pd.DataFrame({"x": rng.random(n), "y": rng.random(n), "label": labels,
                         "label_code": labels.codes.astype(np.int32), "knn_overlap": rng.random(n)})


def colours_drawn(image: np.ndarray) -> set[tuple[int, int, int]]:
    drawn = image[image[..., 3] == 255][:, :3]
    return {tuple(int(v) for v in c) for c in np.unique(drawn, axis=0)}


def test_each_category_in_its_fixed_palette_colour():
    points = frame()
    codes = np.array([7, 2, 9])  # category i is drawn in palette colour codes[i] (e.g. the class id)
    only_b = points[points["label"] == "b"]
    image = shade(only_b, "label", (0, 1), (0, 1), codes, width=64, height=64)
    expected = tuple(int(category_colour(2)[i:i + 2], 16) for i in (1, 3, 5))
    assert colours_drawn(image) == {expected}
    assert PALETTE_RGBA.shape[1] == 4


def test_highlight_over_grey_and_flat_density_is_visible():
    points = frame()
    image = shade(points, "label", (0, 1), (0, 1), np.arange(3), width=80, height=80, highlight=points.iloc[:10])
    grey = tuple(int(BACKGROUND_GREY[i:i + 2], 16) for i in (1, 3, 5))
    assert grey in colours_drawn(image) and len(colours_drawn(image) - {grey}) >= 1
    one = pd.DataFrame({"x": [0.5], "y": [0.5]})
    dense = shade(one, "density", (0, 1), (0, 1), np.empty(0), width=20, height=20)
    drawn = dense[dense[..., 3] > 0][:, :3]
    assert len(drawn) and (drawn.astype(int).sum(1) < 3 * 240).all()  # one point per pixel is not drawn white


def test_highlighted_rasters_run_top_to_bottom_with_the_numeric_span():
    """With a highlight, the image is still top row first, and numeric colours use the span given."""
    points = pd.DataFrame({"x": [0.1, 0.9], "y": [0.95, 0.05], "knn_overlap": [0.5, 0.5], "label_code": [0, 0]})
    low = shade(points, "knn_overlap", (0, 1), (0, 1), np.array([0]), span=(0.0, 1.0), width=40, height=40,
                highlight=points.iloc[:1])
    high = shade(points, "knn_overlap", (0, 1), (0, 1), np.array([0]), span=(0.5, 2.0), width=40, height=40,
                 highlight=points.iloc[:1])
    top_left, bottom_right = low[:8, :8], low[-8:, -8:]  # the highlighted point is at the top left
    assert (top_left[..., 3] == 255).any() and tuple(bottom_right[bottom_right[..., 3] > 0][0][:3]) == rgb(BACKGROUND_GREY)
    assert not np.array_equal(low[:8, :8], high[:8, :8])  # 0.5 is mid-range in (0, 1), the low end of (0.5, 2)


def test_raster_rows_run_top_to_bottom():
    top = pd.DataFrame({"x": [0.5], "y": [0.95], "label": pd.Categorical(["a"]), "label_code": [0]})
    image = shade(top, "label", (0, 1), (0, 1), np.array([0]), width=10, height=10)
    rows = np.flatnonzero(image[..., 3].max(1))
    assert rows.max() < 5  # a point near the top of the data is near the top of the image


def test_escaping_and_legends():
    assert esc("<b a='1'>&") == "&lt;b a=&#x27;1&#x27;&gt;&amp;" and esc(None) == ""
    assert "data-colour='density'" in colour_bar("density") and "linear-gradient" in colour_bar("knn_overlap")
    key = marker_key(["selected", "neighbour"])
    assert key.count("lens-ring-key") == 2 and "neighbour" in key
    assert home_range((0, 10, 0, 0)) == ((-0.3, 10.3), (-0.03, 0.03))
    options = choice_options({"<img src=x onerror=alert(1)>": 3, "7: seven & 'eight'": 7})
    assert options == {"&lt;img src=x onerror=alert(1)&gt;": 3, "7: seven &amp; &#x27;eight&#x27;": 7}


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def test_many_categories_use_the_palette_lookup():
    from dashboards.render import MAX_BLENDED_CATEGORIES, PALETTE

    n = MAX_BLENDED_CATEGORIES + 5
    cats = [f"c{i}" for i in range(n)]
    # one point per category, each alone in its own pixel column
    points = pd.DataFrame({"x": np.arange(n) * 6 + 3.5, "y": np.full(n, 0.5),  # 6 px apart: spreads do not meet
                           "label": pd.Categorical(cats, categories=cats), "label_code": np.arange(n, dtype=np.int32)})
    codes = np.arange(n) * 3 + 1  # palette colour of category i: codes[i]
    image = shade(points, "label", (0, 6 * n), (0, 1), codes, width=6 * n, height=1)
    for i in range(n):
        assert tuple(image[0, 6 * i + 3, :3]) == rgb(PALETTE[codes[i] % len(PALETTE)]) and image[0, 6 * i + 3, 3] == 255
    assert np.all(PALETTE_RGBA[:, 3] == 255) and [tuple(c[:3]) for c in PALETTE_RGBA] == [rgb(c) for c in PALETTE]
    blank = shade(points.iloc[:0], "label", (0, 6 * n), (0, 1), codes, width=6 * n, height=1)
    assert not blank[..., 3].any()
    few = points.iloc[:3].assign(label=pd.Categorical(cats[:3]), label_code=np.arange(3, dtype=np.int32))
    blended = shade(few, "label", (0, 6 * n), (0, 1), codes[:3], width=6 * n, height=1)
    assert [tuple(blended[0, 6 * i + 3, :3]) for i in range(3)] == [rgb(category_colour(c)) for c in codes[:3]]
    assert category_colour(len(PALETTE) + 2) == PALETTE[2]


def test_numeric_and_density_colours():
    from dashboards.render import DENSITY_CMAP, NUMERIC_CMAP

    one = pd.DataFrame({"x": [2.5, 12.5, 22.5], "y": [0.5, 0.5, 0.5], "knn_overlap": [0.0, 1.0, 0.5]})
    image = shade(one, "knn_overlap", (0, 30), (0, 1), np.empty(0), width=30, height=1)
    assert tuple(image[0, 2, :3]) == rgb(NUMERIC_CMAP[0]) and tuple(image[0, 12, :3]) == rgb(NUMERIC_CMAP[-1])
    middle = tuple(image[0, 22, :3])
    assert middle not in (rgb(NUMERIC_CMAP[0]), rgb(NUMERIC_CMAP[-1]))
    spanned = shade(one, "knn_overlap", (0, 30), (0, 1), np.empty(0), span=(0.0, 2.0), width=30, height=1)
    assert tuple(spanned[0, 12, :3]) == middle  # 1.0 is mid-way on a span of (0, 2)
    dense = pd.DataFrame({"x": [2.5] * 5 + [12.5], "y": [0.5] * 6})
    counts = shade(dense, "density", (0, 30), (0, 1), np.empty(0), width=30, height=1)
    assert tuple(counts[0, 2, :3]) == rgb(DENSITY_CMAP[-1])  # the most points: the end of the colour map
    assert tuple(counts[0, 12, :3]) == rgb(DENSITY_CMAP[0])


def test_spread_depends_on_the_number_of_points():
    from dashboards.render import _spread

    canvas_points = pd.DataFrame({"x": [10.5], "y": [10.5], "label": pd.Categorical(["a"]), "label_code": [0]})
    image = shade(canvas_points, "label", (0, 21), (0, 21), np.array([0]), width=21, height=21)
    assert (image[..., 3] > 0).sum() == 21  # a lone point: a disc 2 px wide either side
    import datashader.transfer_functions as tf
    import xarray as xr

    raster = np.zeros((21, 21), dtype=np.uint32)
    raster[10, 10] = 0xFF0000FF
    agg = tf.Image(xr.DataArray(raster, dims=("y", "x"), coords={"y": np.arange(21), "x": np.arange(21)}))
    sizes = {n: int((_spread(agg, n).to_numpy() != 0).sum()) for n in (19_999, 20_000, 199_999, 200_000)}
    assert sizes == {19_999: 21, 20_000: 9, 199_999: 9, 200_000: 37}  # fixed 2, 1, then only dynamic spread


def test_highlight_and_overlay_colours():
    from dashboards.render import OVERLAY_COLOUR, shade_overlay

    points = frame()
    image = shade(points, "label", (0, 1), (0, 1), np.array([4, 5, 6]), width=60, height=60,
                  highlight=points[points["label"] == "c"])
    colours = colours_drawn(image)
    assert colours == {tuple(int(BACKGROUND_GREY[i:i + 2], 16) for i in (1, 3, 5)), rgb(category_colour(6))}
    overlay = shade_overlay(points, (0, 1), (0, 1), 40, 30)
    assert overlay.shape == (30, 40, 4) and colours_drawn(overlay) == {rgb(OVERLAY_COLOUR)}
    top = shade_overlay(pd.DataFrame({"x": [0.5], "y": [0.97]}), (0, 1), (0, 1), 10, 10)
    assert np.flatnonzero(top[..., 3].max(1)).max() < 5  # rows top to bottom


def test_legends_urls_and_home_range():
    from dashboards import render
    from dashboards.render import DENSITY_CMAP, NUMERIC_CMAP, image_url, inline_images

    bar = colour_bar("knn_overlap")
    stops = ", ".join(NUMERIC_CMAP[int(i * (len(NUMERIC_CMAP) - 1) / 8)] for i in range(9))
    assert f"linear-gradient(to right, {stops})" in bar and "<span>0</span>" in bar and "<span>1</span>" in bar
    assert "neighbour audit: share of raw-space neighbours kept on the map" in bar
    density = colour_bar("density")
    assert DENSITY_CMAP[0] in density and DENSITY_CMAP[-1] in density and "<span>fewest</span>" in density
    assert "points per pixel (histogram-equalised)" in density
    key = marker_key(["hover", "generated"])
    assert key == ("<div class='lens-marker-key'><span class='lens-ring-key'><span class='ring' "
                   "style='border-color:#222222'></span>hovered</span><span class='lens-ring-key'><span class='ring' "
                   "style='border-color:#00c853'></span>generated</span></div>")
    assert image_url("run-1", 2, 35) == "/image/run-1/2/35/thumb"
    assert image_url("run-1", np.int64(2), np.int32(35), thumb=False) == "/image/run-1/2/35"
    assert render.INLINE_IMAGES_LAKE is None
    inline_images("/some/lake")
    try:
        assert render.INLINE_IMAGES_LAKE == "/some/lake"
    finally:
        inline_images(None)
    assert render.INLINE_IMAGES_LAKE is None
    (x0, x1), (y0, y1) = home_range((1, 3, -2, 8))
    assert (x0, x1, y0, y1) == pytest.approx((0.94, 3.06, -2.3, 8.3))
    (x0, x1), (y0, y1) = home_range((5, 5, 1, 1))
    assert (x0, x1, y0, y1) == pytest.approx((4.97, 5.03, 0.97, 1.03))


def test_quick_range_updates_and_panes():
    from types import SimpleNamespace

    from dashboards.render import CSS, LOD_TIMEOUT_MS, html_pane, quick_range_updates

    plot = SimpleNamespace(state=SimpleNamespace(lod_timeout=500, lod_interval=300))
    quick_range_updates(plot, None)
    assert plot.state.lod_timeout == plot.state.lod_interval == LOD_TIMEOUT_MS == 60
    pane = html_pane("<b>x</b>", width=120)
    assert pane.object == "<b>x</b>" and pane.width == 120 and CSS in pane.stylesheets
    assert html_pane().object == ""


def test_inline_images_are_data_uris(embedded_lake_small):
    from dashboards.render import image_url, inline_images

    root, run_id, chunk, sample = embedded_lake_small
    inline_images(str(root))
    try:
        url = image_url(run_id, chunk, sample, thumb=False)
    finally:
        inline_images(None)
    import base64

    assert url.startswith("data:image/png;base64,")
    from store.maps import sample_image

    assert base64.b64decode(url.split(",", 1)[1]) == sample_image(str(root), run_id, chunk, sample)[0]


@pytest.fixture()
def embedded_lake_small(tmp_path):
    """A synthetic prompt run (images in its samples), written in milliseconds."""
    from store.synthetic import write_run

    write_run(tmp_path, "tiny", 20, ["a", "b"])
    return tmp_path, "tiny", 0, 5


def test_colour_bars_in_full():
    from dashboards.render import DENSITY_CMAP, NUMERIC_CMAP

    def bar(colour, cmap, title, low, high):
        stops = ", ".join(cmap[int(i * (len(cmap) - 1) / 8)] for i in range(9))
        return (f"<div class='lens-colour-bar' data-colour='{colour}'><div>{title}</div>"
                f"<div style='height:12px;background:linear-gradient(to right, {stops})'></div>"
                f"<div style='display:flex;justify-content:space-between'><span>{low}</span>"
                f"<span>{high}</span></div></div>")

    assert colour_bar("density") == bar("density", DENSITY_CMAP, "points per pixel (histogram-equalised)", "fewest", "most")
    assert colour_bar("knn_overlap") == bar("knn_overlap", NUMERIC_CMAP,
                                            "neighbour audit: share of raw-space neighbours kept on the map", "0", "1")
    assert "#560000, #7b0200" in colour_bar("density")  # the dark end first


def test_overlay_keeps_its_range_and_full_opacity():
    from dashboards.render import shade_overlay

    points = pd.DataFrame({"x": [1.5] * 6 + [7.5], "y": [5.5] * 6 + [5.5]})  # 6 points on one spot, 1 on another
    image = shade_overlay(points, (0, 30), (0, 11), 30, 11)
    columns = np.flatnonzero(image[..., 3].max(0))
    assert columns.min() == 0 and columns.max() == 9  # drawn where the range puts them, spread 2 px
    assert image[5, 1, 3] == image[5, 7, 3] == 255  # one point as opaque as six


def test_inline_thumbnails_are_webp_data_uris(tmp_path):
    import base64

    import pyarrow as pa

    from dashboards.render import image_url, inline_images
    from store.lake import Lake, samples_parts
    from tests.small_lake import samples_table

    table = samples_table("thumbs", np.arange(2), 0, np.arange(2), np.zeros(2, np.int32), {})
    table = table.set_column(table.schema.get_field_index("image_png"), "image_png", pa.array([b"png0", b"png1"]))
    table = table.set_column(table.schema.get_field_index("thumbnail"), "thumbnail", pa.array([b"webp0", None]))
    Lake(tmp_path).write_parquet(table, *samples_parts("thumbs", 0))
    inline_images(str(tmp_path))
    try:
        urls = [image_url("thumbs", 0, 0), image_url("thumbs", 0, 0, thumb=False), image_url("thumbs", 0, 1)]
    finally:
        inline_images(None)
    assert urls == ["data:image/webp;base64," + base64.b64encode(b"webp0").decode(),
                    "data:image/png;base64," + base64.b64encode(b"png0").decode(),
                    "data:image/png;base64," + base64.b64encode(b"png1").decode()]  # no thumbnail: the image


def test_tags_blending_unlabelled_points_and_two_point_density():
    from dashboards.render import DENSITY_CMAP, MAX_BLENDED_CATEGORIES, PALETTE

    tags = ["t0", "t1"]
    points = pd.DataFrame({"x": [2.5, 12.5], "y": [0.5, 0.5], "tags": pd.Categorical(tags, categories=tags),
                           "tags_code": np.array([0, 1], np.int32)})
    image = shade(points, "tags", (0, 20), (0, 1), np.array([3, 8]), width=20, height=1)
    assert tuple(image[0, 2, :3]) == rgb(PALETTE[3]) and tuple(image[0, 12, :3]) == rgb(PALETTE[8])
    n = MAX_BLENDED_CATEGORIES  # the most categories still blended: two in one pixel mix their colours
    cats = [f"c{i}" for i in range(n)]
    pair = pd.DataFrame({"x": [2.5, 2.5], "y": [0.5, 0.5], "label": pd.Categorical(["c0", "c1"], categories=cats),
                         "label_code": np.array([0, 1], np.int32)})
    mixed = tuple(shade(pair, "label", (0, 20), (0, 1), np.arange(n), width=20, height=1)[0, 2, :3])
    assert mixed not in (rgb(PALETTE[0]), rgb(PALETTE[1]))
    many = [f"c{i}" for i in range(n + 1)]
    lone = pd.DataFrame({"x": [2.5, 12.5], "y": [0.5, 0.5], "label": pd.Categorical([None, "c3"], categories=many),
                         "label_code": np.array([-1, 3], np.int32)})
    drawn = shade(lone, "label", (0, 20), (0, 1), np.arange(n + 1), width=20, height=1)
    assert drawn[0, 2, 3] == 0 and tuple(drawn[0, 12, :3]) == rgb(PALETTE[3])  # no label: not drawn
    two = pd.DataFrame({"x": [2.5, 2.5, 12.5], "y": [0.5, 0.5, 0.5]})
    counts = shade(two, "density", (0, 20), (0, 1), np.empty(0), width=20, height=1)
    one = shade(two.iloc[1:], "density", (0, 20), (0, 1), np.empty(0), width=20, height=1)
    assert tuple(counts[0, 2, :3]) == rgb(DENSITY_CMAP[-1]) and tuple(counts[0, 12, :3]) == rgb(DENSITY_CMAP[0])
    assert tuple(one[0, 2, :3]) == tuple(one[0, 12, :3]) not in (rgb(DENSITY_CMAP[0]), rgb(DENSITY_CMAP[-1]))


def test_blended_alpha_follows_the_count():
    cats = ["a", "b"]
    points = pd.DataFrame({"x": [2.5] + [12.5] * 9, "y": [0.5] * 10,
                           "label": pd.Categorical(["a"] * 10, categories=cats), "label_code": np.zeros(10, np.int32)})
    image = shade(points, "label", (0, 20), (0, 1), np.array([0, 1]), width=20, height=1)
    assert image[0, 2, 3] == 200 and image[0, 12, 3] == 255  # the fewest points at min_alpha, the most opaque
