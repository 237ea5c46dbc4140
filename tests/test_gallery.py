"""The box / lasso gallery: counts, thumbnails, the region outline, exports (hostile prompts stay text)."""

from __future__ import annotations

import numpy as np

from dashboards.map_tab import MapTab
from tests.conftest import HOSTILE_PROMPTS


def test_box_selection_opens_a_gallery_outlines_it_and_exports(hostile_lake):
    import io

    import pandas as pd

    from dashboards.gallery import PAGE_SIZE

    tab = MapTab(str(hostile_lake["lake"]), {"run": "hostile"})
    xy = tab.state.points.frame[["x", "y"]].to_numpy()
    box = (xy[:, 0].min(), xy[:, 1].min(), np.median(xy[:, 0]), xy[:, 1].max())
    tab.map._box(bounds=box)
    inside = (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[2]) & (xy[:, 1] >= box[1]) & (xy[:, 1] <= box[3])
    selected = len(tab.state.region_rows)
    assert selected == int(inside.sum()) and 0 < selected < len(xy)
    assert f">{selected:,}<" in tab.gallery.info.object
    assert [c["sample"] for c in tab.gallery.thumbs.items] == list(
        tab.state.points.frame["sample_id"].to_numpy()[np.flatnonzero(inside)][:PAGE_SIZE])
    assert "&lt;script&gt;" in tab.gallery.info.object
    outline = tab.map.outline.data[0]  # the region stays outlined on the map
    assert outline[:, 0].min() == box[0] and outline[:, 0].max() == box[2]
    exported = pd.read_csv(io.BytesIO(tab.gallery.export("csv").getvalue()), keep_default_na=False)
    assert len(exported) == selected and set(exported["prompt"]) <= set(HOSTILE_PROMPTS)
