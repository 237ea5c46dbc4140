"""The Map tab's state changes, without a browser (the page itself: tests/test_explorer.py)."""

from __future__ import annotations

import numpy as np

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
