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
