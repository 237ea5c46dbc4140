"""The embed/neighbour benchmark runs end to end at toy size (the figures come from `make bench`)."""

from __future__ import annotations

import json

from store.bench import clustered, main


def test_toy_store_bench(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--sizes", "3000", "--dims", "64", "--full-fit-limit", "0", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    neighbours, layout = results["neighbours"][0], results["layouts"][0]
    assert neighbours["recall_at_10"] == 1.0  # exact below the approximate-search threshold
    assert neighbours["speedup"] > 1
    assert 0.5 < layout["trustworthiness"] <= 1


def test_clustered_data_shape_and_seed():
    a, b = clustered(1000, 16, seed=3), clustered(1000, 16, seed=3)
    assert a.shape == (1000, 16) and a.dtype.name == "float32" and (a == b).all()
