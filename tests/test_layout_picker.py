"""Choosing a layout: layers in capture order, human names, the newest full layout by default, URL
values taken where they exist and named in a notice where they do not."""

from __future__ import annotations

import shutil
import time

import numpy as np

from dashboards.layout_picker import LayoutPicker
from store import catalogue, connect, maps
from store.embed import embed_subset
from tests.conftest import DIGITS_LAYERS


def test_capture_order_names_and_the_newest_full_layout(embedded_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    run_id = embedded_lake["run_id"]
    picker = LayoutPicker(str(lake), connect(lake), on_change=lambda key: None)
    assert picker.layer.options == DIGITS_LAYERS.split(",")  # capture order, input to output
    keys = [k for k in catalogue.list_layouts(lake) if k.run_id == run_id]
    assert picker.key == catalogue.newest_full_layout(lake, keys)
    points = maps.points_for(lake, picker.key)
    time.sleep(0.01)
    subset = embed_subset(lake, picker.key, points.frame["sample_id"].to_numpy()[:40], description="40 picked")
    chosen = []
    picker = LayoutPicker(str(lake), connect(lake), on_change=chosen.append, wanted={"layer": subset.layer})
    assert picker.key != subset  # a newer subset is never the default
    names = list(picker.version.options)
    assert len(names) == 2 and "full" in names[0] and "subset: 40 picked" in names[1] and "40 points" in names[1]
    assert all(subset.params_hash not in name for name in names)  # never a bare hash
    picker.version.value = subset
    assert chosen == [subset]


def test_url_values_are_taken_or_named(embedded_lake):
    lake = embedded_lake["lake"]
    key = catalogue.list_layouts(lake)[0]
    picker = LayoutPicker(str(lake), connect(lake), on_change=lambda k: None,
                          wanted={"run": key.run_id, "layer": key.layer, "layout": key.params_hash})
    assert picker.key == key and picker.rejected == []
    picker = LayoutPicker(str(lake), connect(lake), on_change=lambda k: None, wanted={"run": "nope", "layer": "<x>"})
    assert len(picker.rejected) == 2 and "'nope'" in picker.rejected[0]
    assert np.all([k.run_id == picker.key.run_id for k in [picker.key]])
