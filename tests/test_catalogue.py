"""What the lake holds: layers in capture order, labels, layouts and their names, graphs."""

from __future__ import annotations

import pytest

from store import catalogue, connect
from tests.conftest import DIGITS_LAYERS


def test_capture_order_and_labels(embedded_lake):
    order = catalogue.run_layers(connect(embedded_lake["lake"]), embedded_lake["run_id"])
    assert order == DIGITS_LAYERS.split(",")
    assert catalogue.in_capture_order(["zz", *reversed(order), "aa"], order) == [*order, "aa", "zz"]
    assert catalogue.sample_label(3, "3", None) == "3" and catalogue.sample_label(3, None, None) == "3"
    assert catalogue.sample_label(417, "balloon", None) == "417: balloon"
    assert catalogue.sample_label(None, None, "a: b") == "a: b"


def test_layouts_are_listed_from_their_files(embedded_lake, tmp_path):
    import shutil
    from pathlib import Path

    lake = tmp_path / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    keys = catalogue.list_layouts(lake)
    files = sorted(p.relative_to(lake).parts for p in (lake / "embeddings").rglob("*.parquet"))
    assert sorted(k.parts() for k in keys) == files
    graph = catalogue.graph_file(lake, keys[0])
    assert graph.endswith(".parquet") and "/indexes/" in graph
    Path(graph).unlink()
    with pytest.raises(FileNotFoundError, match="make embed"):
        catalogue.graph_file(lake, keys[0])
