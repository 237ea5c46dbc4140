"""Per-class diversity on the embedded student's lake."""

from __future__ import annotations

import shutil

import pytest

from store import connect
from store.diversity import centred, diversity
from store.metrics import vendi_score
from store.vectors import load_matrix


@pytest.fixture(scope="module")
def lake(digits_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("diversity") / "lake"
    shutil.copytree(digits_lake["lake"], root)
    return {"root": root, "run": digits_lake["result"].run_id}


def test_one_row_per_class_most_collapsed_first(lake):
    table = diversity(lake["root"], lake["run"], "dec.8x8_block1").to_pylist()
    classes = connect(lake["root"]).sql("SELECT class_id, class_name, count(*) FROM samples GROUP BY ALL").fetchall()
    assert sorted((r["label"], r["samples"]) for r in table) == sorted((str(i) if n == str(i) else f"{i}: {n}", c) for i, n, c in classes)
    assert [r["vendi_score"] for r in table] == sorted(r["vendi_score"] for r in table)
    for row in table:
        assert 1.0 <= row["vendi_score"] <= row["samples"] and 0.0 <= row["knn_purity"] <= 1.0
    ids, vectors = load_matrix(lake["root"], lake["run"], "dec.8x8_block1")
    labels = connect(lake["root"]).sql("SELECT class_id FROM samples ORDER BY sample_id").fetchall()
    first = table[0]
    members = [i for i, (c,) in enumerate(labels) if first["label"] == str(c) or first["label"].startswith(f"{c}:")]
    assert members
    assert first["vendi_score"] == pytest.approx(vendi_score(centred(vectors)[members]), rel=1e-5)


def test_centring_removes_the_shared_direction():
    import numpy as np

    rng = np.random.default_rng(0)
    spread = rng.normal(size=(50, 8)).astype(np.float32)
    shifted = spread + 100.0  # a large common direction, as pooled activations have
    assert np.allclose(centred(shifted), centred(spread), atol=1e-3)
    assert vendi_score(shifted) < 1.1 < vendi_score(centred(shifted))


def test_near_duplicates_follow_the_threshold_and_are_stored(lake):
    loose = diversity(lake["root"], lake["run"], "enc.8x8_block0", threshold=2.001).to_pylist()  # cosine distance <= 2
    assert all(r["near_duplicate_pairs"] == r["samples"] * (r["samples"] - 1) // 2 for r in loose)
    strict = diversity(lake["root"], lake["run"], "enc.8x8_block0", threshold=0.0).to_pylist()
    assert all(r["near_duplicate_pairs"] == 0 and r["example_pair"] == [] for r in strict)
    stored = connect(lake["root"]).sql("SELECT DISTINCT threshold FROM diversity WHERE layer = 'enc.8x8_block0'"
                                       " ORDER BY 1").fetchall()
    assert stored == [(0.0,), (2.001,)]
