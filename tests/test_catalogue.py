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


def test_stored_layers_are_capture_order_then_added_features(digits_lake, tmp_path):
    import shutil

    from store.catalogue import stored_layers
    from store.lake import Lake

    lake = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    run_id = digits_lake["result"].run_id
    recorded = Lake(lake).read_runs(run_id).column("layers")[0].as_py()
    activations = lake / "activations" / run_id
    for name in ("features.b", "features.a"):  # vectors added after the run, as `ingest features` adds them
        shutil.copytree(activations / recorded[0], activations / name)
    shutil.rmtree(activations / recorded[1] / "mean")  # a layer without this pooling is left out
    assert stored_layers(Lake(lake), run_id, "mean") == [recorded[0], *recorded[2:], "features.a", "features.b"]
    assert stored_layers(Lake(lake), run_id, "grid2") == [*recorded, "features.a", "features.b"]
