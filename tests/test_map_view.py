"""The one map component: every change redraws (the DynamicMap's memo is defeated), fit, picking,
markers and region outlines."""

from __future__ import annotations

import numpy as np
import pytest

from dashboards.map_view import MapView, fitted_range, marker_positions
from dashboards.render import MARKER_COLOURS
from store import catalogue, maps


@pytest.fixture(scope="module")
def points(embedded_lake):
    lake = embedded_lake["lake"]
    return maps.points_for(lake, catalogue.list_layouts(lake)[0])


def rgba(element) -> np.ndarray:
    return np.stack([element.dimension_values(d) for d in "RGBA"], -1)


def test_a_filter_redraws_through_the_dynamic_map(points):
    """The DynamicMap memoizes by its streams' values: asked again with the same view range it would
    return the old picture. Each change bumps the revision stream, so the raster is recomputed."""
    view = MapView()
    view.show(points)
    view.fit()
    before = rgba(view.raster[()])
    view.set_filter(points.frame["class_id"].to_numpy() == 3, fit=False)  # same view range as before
    after = rgba(view.raster[()])
    assert (before[:, 3] > 0).sum() > (after[:, 3] > 0).sum() > 0  # fewer points drawn, at once
    view.set_colour("density")
    assert not np.array_equal(rgba(view.raster[()]), after)


def test_fit_covers_the_visible_points_with_a_margin(points):
    view = MapView()
    view.show(points)
    keep = points.frame["class_id"].to_numpy() == 5
    view.set_filter(keep)
    xs, ys = points.frame["x"].to_numpy()[keep], points.frame["y"].to_numpy()[keep]
    (x0, x1), (y0, y1) = view.view_range
    assert np.isclose(x0, xs.min() - 0.06 * (xs.max() - xs.min())) and np.isclose(y1, ys.max() + 0.06 * (ys.max() - ys.min()))
    assert fitted_range((0, 0, 2, 2), 0.5) == ((-0.5, 0.5), (1.5, 2.5))  # a zero-width extent still gets a span


def test_a_pick_takes_the_nearest_visible_point(points):
    picked = []
    view = MapView(on_pick=picked.append)
    view.show(points)
    frame = points.frame
    row = 17
    x, y = float(frame["x"].iat[row]), float(frame["y"].iat[row])
    view._tap(x=x, y=y)
    assert picked == [int(frame["sample_id"].iat[row])]
    hidden = np.ones(len(frame), dtype=bool)
    hidden[row] = False
    view.set_filter(hidden, fit=False)
    view._tap(x=x, y=y)  # the point is filtered out: another one within the radius, or none
    assert picked[-1] != int(frame["sample_id"].iat[row]) or len(picked) == 1


def test_markers_regions_and_raster_size(points):
    regions = []
    view = MapView(on_region=regions.append)
    view.show(points)
    ids = points.frame["sample_id"].to_numpy()[[0, 5]]
    view.mark([(int(ids[0]), "selected"), (int(ids[1]), "neighbour"), (10**9, "collected")])
    marks = view.markers.data
    assert list(marks["role"]) == ["selected", "neighbour"]  # a sample the layout lacks is left out
    assert list(marks["colour"]) == [MARKER_COLOURS["selected"], MARKER_COLOURS["neighbour"]]
    assert np.allclose(marks[["x", "y"]].to_numpy(), points.frame[["x", "y"]].to_numpy()[[0, 5]])
    xs, ys = points.frame["x"].to_numpy(), points.frame["y"].to_numpy()
    box = (xs.min(), ys.min(), np.median(xs), np.median(ys))
    view._box(bounds=box)
    expected = np.flatnonzero((xs >= box[0]) & (xs <= box[2]) & (ys >= box[1]) & (ys <= box[3]))
    assert np.array_equal(regions[-1], expected)
    outline = view.outline.data[0]
    assert outline.shape == (5, 2) and np.array_equal(outline[0], outline[-1])  # closed
    assert marker_positions(points, []).empty
    responsive = MapView(width=800, height=600, responsive=True)
    assert responsive.raster_size(30, 20) == (400, 300) and responsive.raster_size(1000, 700) == (1000, 700)
    assert MapView(400, 300).raster_size(30, 20) == (400, 300)
