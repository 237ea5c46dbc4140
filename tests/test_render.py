"""Rasters and the escaped HTML helpers every view draws with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboards.render import (BACKGROUND_GREY, PALETTE_RGBA, category_colour, colour_bar, esc, home_range,
                               marker_key, shade)


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
