"""The embed/neighbour benchmark runs end to end at toy size (the figures come from `make bench`), through the
approximate neighbour path, and its recall and peer helpers compute what they claim."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import store.neighbours
from store.bench import PEERS, bench_peers, clustered, main, recall_at_10, without_self


def test_toy_store_bench_takes_the_approximate_path(tmp_path, monkeypatch):
    monkeypatch.setattr(store.neighbours, "EXACT_LIMIT", 1000)  # 3,000 points: NN-descent, not exact search
    out = tmp_path / "bench.json"
    assert main(["--sizes", "3000", "--dims", "64", "--full-fit-limit", "0", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    neighbours, layout = results["neighbours"][0], results["layouts"][0]
    assert 0.9 <= neighbours["recall_at_10"] <= 1.0
    assert neighbours["speedup"] >= 0  # a timing ratio (rounded): its size is for `make bench`, not a test
    assert 0.5 < layout["trustworthiness"] <= 1
    peers = {p["peer"]: p for p in neighbours["peers"]}
    assert set(peers) == set(PEERS)
    for name, (module, _) in PEERS.items():
        if importlib.util.find_spec(module) is None:  # `make bench` installs them; `make test` need not
            assert peers[name]["build_s"] is None and "[bench]" in peers[name]["missing"]
        else:
            assert peers[name]["build_s"] > 0 and peers[name]["recall_at_10"] >= 0.9


def test_recall_at_10_counts_shared_neighbours():
    truth = np.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [0, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    graph = np.zeros((12, 12), dtype=np.int64)
    graph[0, :10] = [1, 2, 3, 4, 5, 11, 11, 11, 11, 11]  # 5 of 10 right
    graph[0, 10:] = [6, 7]  # beyond the first 10: not counted
    graph[7, :10] = [10, 9, 8, 7, 6, 5, 4, 3, 2, 0]  # all 10, in another order
    assert recall_at_10(truth, graph, np.array([0, 7])) == pytest.approx((0.5 + 1.0) / 2)


def test_without_self_drops_each_row_itself_or_the_last_candidate():
    found = np.array([[0, 5, 6, 7], [4, 1, 2, 3], [9, 8, 7, 6]])
    assert without_self(found, 3).tolist() == [[5, 6, 7], [4, 2, 3], [9, 8, 7]]


def test_missing_peers_are_reported_not_fatal(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("faiss", "hnswlib") else real(name, *a))
    results = bench_peers(tmp_path, np.zeros((1, 10), dtype=np.int64), np.zeros(1, dtype=np.int64), 10)
    assert [r["build_s"] for r in results] == [None, None]
    assert all(r["missing"] == "pip install -e '.[bench]'" for r in results)


def test_clustered_data_shape_and_seed():
    a, b = clustered(1000, 16, seed=3), clustered(1000, 16, seed=3)
    assert a.shape == (1000, 16) and a.dtype.name == "float32" and (a == b).all()
    assert not (a == clustered(1000, 16, seed=4)).all()
