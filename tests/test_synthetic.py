"""store.synthetic: a synthetic prompt run is a lake the store reads like any other: its samples, their
prompts and tags by cluster, a layout, and a neighbour graph that is the exact 2-D k-NN of the layout."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from store import connect, maps
from store.lake import LayoutKey
from store.synthetic import LAYER, POOLING, write_run

N, CLUSTERS, SEED, K = 2000, 20, 1, 10
PROMPTS = ["a red fox", "a lighthouse at dusk", "it's a \"quoted\" prompt; --"]  # 20 clusters % 3: uneven
TAGS = ["warm", "cold"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    lake = tmp_path_factory.mktemp("synthetic") / "lake"
    key = write_run(lake, "syn", N, PROMPTS, tags=TAGS, clusters=CLUSTERS, seed=SEED)
    con = connect(lake)
    yield {"lake": lake, "key": key, "con": con}
    con.close()


def expected_clusters() -> tuple[np.ndarray, np.ndarray]:
    """The documented rule, recomputed: a generator seeded with `seed` draws `clusters` centres uniformly in
    [-20, 20)^2, then each sample's cluster uniformly; cluster c has prompt c % len(prompts) and tag
    c % len(tags)."""
    rng = np.random.default_rng(SEED)
    centres = rng.uniform(-20, 20, (CLUSTERS, 2))
    return centres, rng.integers(0, CLUSTERS, N)


def test_samples_and_run_are_readable(synthetic):
    con = synthetic["con"]
    assert con.execute("SELECT count(*), count(DISTINCT sample_id), min(sample_id), max(sample_id) FROM samples "
                       "WHERE run_id = 'syn'").fetchone() == (N, N, 0, N - 1)
    status, n_samples, model = con.execute("SELECT status, n_samples, model FROM runs WHERE run_id = 'syn'").fetchone()
    assert (status, n_samples, model) == ("complete", N, "synthetic")
    assert con.execute("SELECT count(*) FROM samples WHERE class_id IS NOT NULL").fetchone() == (0,)


def test_prompt_and_tag_distribution(synthetic):
    _, labels = expected_clusters()
    expected_prompts = Counter(PROMPTS[c % len(PROMPTS)] for c in labels)
    rows = synthetic["con"].execute("SELECT prompt, count(*) FROM samples WHERE run_id = 'syn' GROUP BY prompt").fetchall()
    assert dict(rows) == dict(expected_prompts)
    assert len(set(expected_prompts.values())) > 1  # uneven, so a wrong rule would show

    # sample by sample: prompt and tags follow the sample's cluster
    frame = synthetic["con"].execute("SELECT sample_id, prompt, tags FROM samples WHERE run_id = 'syn' "
                                     "ORDER BY sample_id").df()
    assert frame["prompt"].tolist() == [PROMPTS[c % len(PROMPTS)] for c in labels]
    assert [list(t) for t in frame["tags"]] == [[TAGS[c % len(TAGS)]] for c in labels]


def test_one_decodable_tile_per_cluster(synthetic):
    _, labels = expected_clusters()
    rows = synthetic["con"].execute("SELECT sample_id, image_png FROM samples WHERE run_id = 'syn' "
                                    "AND sample_id < 200 ORDER BY sample_id").fetchall()
    by_cluster: dict[int, bytes] = {}
    for sample_id, png in rows:
        assert Image.open(io.BytesIO(png)).size == (16, 16)
        assert by_cluster.setdefault(int(labels[sample_id]), png) == png  # same cluster, same tile
    assert len(set(by_cluster.values())) == len(by_cluster) > 1  # different clusters, different tiles


def test_layout_loads_with_points_for(synthetic):
    key = synthetic["key"]
    assert isinstance(key, LayoutKey)
    assert (key.run_id, key.layer, key.pooling, key.step) == ("syn", LAYER, POOLING, 0)
    points = maps.points_for(synthetic["lake"], key)
    assert len(points) == N
    frame = points.frame
    assert frame["sample_id"].tolist() == list(range(N))
    centres, labels = expected_clusters()
    # each point lies near its cluster's centre (noise of standard deviation 1)
    offsets = frame[["x", "y"]].to_numpy(np.float64) - centres[labels]
    assert np.abs(offsets).max() < 6 and 0.8 < offsets.std() < 1.2
    assert frame["prompt"].astype(str).tolist() == [PROMPTS[c % len(PROMPTS)] for c in labels]
    assert frame["tags"].astype(str).tolist() == [TAGS[c % len(TAGS)] for c in labels]
    assert synthetic["con"].execute("SELECT points FROM layouts WHERE run_id = 'syn' AND params_hash = ?",
                                    [key.params_hash]).fetchone() == (N,)


def test_graph_is_the_exact_knn_of_the_layout(synthetic):
    con = synthetic["con"]
    xy = maps.points_for(synthetic["lake"], synthetic["key"]).frame[["x", "y"]].to_numpy(np.float64)
    graph = con.execute("SELECT sample_id, neighbour_ids, distances FROM neighbours WHERE run_id = 'syn' "
                        "AND layer = ? AND pooling = ? AND step = 0 ORDER BY sample_id", [LAYER, POOLING]).df()
    assert graph["sample_id"].tolist() == list(range(N))
    tree = cKDTree(xy)
    rows = np.random.default_rng(0).choice(N, 300, replace=False)
    _, found = tree.query(xy[rows], k=K + 1)
    for row, candidates in zip(rows, found):
        expected = [int(c) for c in candidates if c != row][:K]
        ids = list(graph["neighbour_ids"][row])
        distances = np.asarray(graph["distances"][row], np.float64)
        assert ids == expected, row
        assert row not in ids
        assert np.all(np.diff(distances) >= 0), row
        np.testing.assert_allclose(distances, np.linalg.norm(xy[ids] - xy[row], axis=1), rtol=1e-5, atol=1e-5)
