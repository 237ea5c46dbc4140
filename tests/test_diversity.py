"""Per-class diversity on the embedded student's lake."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest

from store import connect
from store.diversity import centred, diversity
from store.metrics import vendi_score
from store.vectors import load_matrix
from tests.small_lake import write_vectors_run


# --- plain re-computations (on the vectors centred in the test) ---------------------------------------

def cosine(u: np.ndarray, v: np.ndarray) -> float:
    return 1.0 - float(u @ v) / (math.sqrt(float(u @ u)) * math.sqrt(float(v @ v)))


def loop_figures(x: np.ndarray, threshold: float) -> dict:
    """Mean pairwise cosine distance, near-duplicate pairs (i < j, closest first) and Vendi score of rows."""
    n = len(x)
    distances = {(i, j): cosine(x[i], x[j]) for i in range(n) for j in range(n) if i != j}
    mean = sum(distances.values()) / len(distances) if n > 1 else 0.0
    pairs = sorted((d, i, j) for (i, j), d in distances.items() if i < j and d <= threshold)
    kernel = np.array([[1.0 - distances.get((i, j), 0.0) for j in range(n)] for i in range(n)])
    eigenvalues = np.linalg.eigvalsh(kernel / n)
    vendi = math.exp(-sum(e * math.log(e) for e in eigenvalues if e > 1e-12))
    return {"mean": mean, "pairs": [(i, j) for _, i, j in pairs], "vendi": vendi}


def loop_purity(x: np.ndarray, labels: list, k: int) -> list[float]:
    """Per row: share of its k nearest other rows (cosine, among all rows) with its label."""
    out = []
    for i in range(len(x)):
        nearest = sorted((cosine(x[i], x[j]), j) for j in range(len(x)) if j != i)[:k]
        out.append(sum(labels[j] == labels[i] for _, j in nearest) / k)
    return out


@pytest.fixture()
def small(tmp_path) -> dict:
    """A run of 45 samples in classes of unequal size and spread (class 2 nearly collapsed, with near-duplicate
    pairs), all sharing a large offset, as pooled activations do."""
    rng = np.random.default_rng(0)
    classes = np.array([0] * 20 + [1] * 15 + [2] * 10)
    rng.shuffle(classes)
    centres = {0: rng.normal(size=6), 1: rng.normal(size=6), 2: rng.normal(size=6)}
    spread = {0: 1.0, 1: 0.5, 2: 0.05}
    x = np.array([centres[c] + spread[c] * rng.normal(size=6) for c in classes]) + 30.0
    members = np.flatnonzero(classes == 2)
    x[members[3]] = x[members[1]] + 1e-3 * rng.normal(size=6)  # the closest pair
    x[members[7]] = x[members[1]] + 5e-3 * rng.normal(size=6)
    write_vectors_run(tmp_path, "run", {"l": x.astype(np.float32)}, classes, chunk_size=16,
                      names={0: "zero", 1: "1", 2: "two"})
    return {"root": tmp_path, "x": x.astype(np.float32).astype(np.float64), "classes": classes}


def test_diversity_figures_match_a_loop(small):
    x = small["x"] - small["x"].mean(0)  # centred on the layer's mean over all samples
    labels = [{0: "0: zero", 1: "1", 2: "2: two"}[c] for c in small["classes"]]
    threshold = 1e-4
    table = diversity(small["root"], "run", "l", k=5, threshold=threshold).to_pylist()
    purity = loop_purity(x, labels, 5)
    assert [r["label"] for r in table] == ["2: two", "1", "0: zero"]  # lowest Vendi score first
    for row in table:
        members = [i for i, label in enumerate(labels) if label == row["label"]]
        figures = loop_figures(x[members], threshold)
        assert (row["samples"], row["measured"]) == (len(members), len(members))
        assert row["mean_pairwise_distance"] == pytest.approx(figures["mean"], abs=1e-6)
        assert row["vendi_score"] == pytest.approx(figures["vendi"], rel=1e-5)
        assert row["knn_purity"] == pytest.approx(np.mean([purity[i] for i in members]), abs=1e-12)
        assert row["near_duplicate_pairs"] == len(figures["pairs"])
        first = figures["pairs"][0] if figures["pairs"] else None
        assert row["example_pair"] == ([members[first[0]], members[first[1]]] if first else [])
        assert (row["run_id"], row["layer"], row["pooling"], row["step"], row["threshold"]) == ("run", "l", "mean", 0, threshold)
    assert table[0]["near_duplicate_pairs"] == 3 and any(0 < r["knn_purity"] < 1 for r in table)
    uncentred = loop_figures(small["x"][[i for i, c in enumerate(small["classes"]) if c == 0]], threshold)
    assert abs(uncentred["mean"] - table[-1]["mean_pairwise_distance"]) > 0.1  # centring matters here
    stored = connect(small["root"]).sql("SELECT label, vendi_score FROM diversity ORDER BY vendi_score").fetchall()
    assert stored == [(r["label"], r["vendi_score"]) for r in table]
    assert (small["root"] / "diversity" / "run" / "l" / "mean").is_dir()


def test_large_groups_are_measured_on_a_seeded_sample(small, monkeypatch):
    import store.diversity

    monkeypatch.setattr(store.diversity, "MAX_GROUP", 12)
    x = small["x"] - small["x"].mean(0)
    labels = np.array([{0: "0: zero", 1: "1", 2: "2: two"}[c] for c in small["classes"]], dtype=object)
    table = {r["label"]: r for r in diversity(small["root"], "run", "l", k=3, seed=5).to_pylist()}
    rng = np.random.default_rng(5)
    for label in ("0: zero", "1", "2: two"):  # sampled in label order, from one generator
        members = np.flatnonzero(labels == label)
        measured = members if len(members) <= 12 else np.sort(rng.choice(members, 12, replace=False))
        row = table[label]
        assert (row["samples"], row["measured"]) == (len(members), len(measured))
        figures = loop_figures(x[measured], 0.01)
        assert row["vendi_score"] == pytest.approx(figures["vendi"], rel=1e-5)
        assert row["mean_pairwise_distance"] == pytest.approx(figures["mean"], abs=1e-6)
    assert table["0: zero"]["measured"] == 12 and table["2: two"]["measured"] == 10
    other = {r["label"]: r for r in diversity(small["root"], "run", "l", k=3, seed=6).to_pylist()}
    assert other["0: zero"]["vendi_score"] != table["0: zero"]["vendi_score"]  # another sample


def test_a_killed_runs_temporary_file_is_removed(small):
    from tests.small_lake import plant_temporary

    killed = plant_temporary(small["root"] / "diversity" / "run" / "l")
    others = plant_temporary(small["root"] / "diversity" / "another-run")  # not this run's: left for its own run
    diversity(small["root"], "run", "l", k=3)
    assert not killed.exists() and others.exists()


def test_a_class_of_one_sample(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    write_vectors_run(tmp_path, "run", {"l": x}, np.array([0] * 8 + [1]))
    rows = {r["label"]: r for r in diversity(tmp_path, "run", "l", threshold=2.5).to_pylist()}
    assert rows["1"]["near_duplicate_pairs"] == 0 and rows["1"]["mean_pairwise_distance"] == 0.0
    assert rows["1"]["vendi_score"] == pytest.approx(1.0) and rows["1"]["example_pair"] == []
    assert rows["0"]["near_duplicate_pairs"] == 28 and rows["0"]["example_pair"] != []
    assert rows["1"]["knn_purity"] == 0.0 and rows["0"]["knn_purity"] == 7 / 8  # k = 10 capped at 8 others


def test_stored_tables_read_back_with_a_partner(small, tmp_path):
    from store.diversity import stored_diversity, stored_diversity_layers, stored_thresholds

    root = small["root"]
    write_vectors_run(root, "partner", {"l": small["x"][::-1].copy(), "m": small["x"]}, small["classes"],
                      names={0: "zero", 1: "1", 2: "two"})
    write_vectors_run(root, "solo", {"m": small["x"], "l": small["x"]}, small["classes"])
    ours = diversity(root, "run", "l", threshold=0.02).to_pandas()
    diversity(root, "run", "l", threshold=0.5)
    theirs = diversity(root, "partner", "l", threshold=0.02).to_pandas()
    diversity(root, "solo", "l")
    diversity(root, "solo", "m")
    con = connect(root)
    assert stored_thresholds(con, "run", "l") == [0.02, 0.5] and stored_thresholds(con, "run", "m") == []
    assert stored_diversity(con, "run", "m") is None
    frame = stored_diversity(con, "run", "l")  # the smallest threshold by default
    assert frame["label"].tolist() == ours["label"].tolist() and set(frame["threshold"]) == {0.02}
    np.testing.assert_allclose(frame["vendi_score"], ours["vendi_score"])
    assert "vendi_score_partner" not in frame
    loose = stored_diversity(con, "run", "l", threshold=0.5)
    assert set(loose["threshold"]) == {0.5} and loose["near_duplicate_pairs"].sum() > frame["near_duplicate_pairs"].sum()
    paired = stored_diversity(con, "run", "l", partner="partner")
    by_label = theirs.set_index("label")
    for column in ("mean_pairwise_distance", "knn_purity", "near_duplicate_pairs", "vendi_score"):
        np.testing.assert_allclose(paired[f"{column}_partner"], by_label.loc[paired["label"], column].to_numpy())
    assert paired["label"].tolist() == frame["label"].tolist()
    assert "vendi_score_partner" not in stored_diversity(con, "run", "l", partner="nobody")
    assert frame.columns.tolist() == ["label", "samples", "measured", "mean_pairwise_distance", "knn_purity",
                                      "near_duplicate_pairs", "vendi_score", "example_pair", "step", "threshold"]
    assert frame.index.tolist() == list(range(3))
    keep = small["classes"] != 1
    write_vectors_run(root, "fewer", {"l": small["x"][keep]}, small["classes"][keep], names={0: "zero", 2: "two"})
    diversity(root, "fewer", "l", threshold=0.02)
    partial = stored_diversity(con, "run", "l", partner="fewer")
    assert partial["label"].tolist() == frame["label"].tolist()  # every label of ours, the partner's where it has one
    assert partial.set_index("label")["vendi_score_partner"].isna().tolist() == [lab == "1" for lab in frame["label"]]
    assert stored_diversity_layers(con, "solo") == ["m", "l"]  # capture order, not names
    assert stored_diversity_layers(con, "run") == ["l"]


def test_labels_of_in_any_order(small):
    from store.diversity import labels_of
    from store.lake import Lake

    ids = np.array([44, 0, 17, 3])
    expected = [{0: "0: zero", 1: "1", 2: "2: two"}[c] for c in small["classes"][ids]]
    assert labels_of(Lake(small["root"]), "run", ids).tolist() == expected


def test_centred_is_float32_centred_in_float64():
    x = np.array([[1e8 + 1.0, 2.0], [1e8 + 3.0, 4.0]], dtype=np.float64)
    out = centred(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[-1.0, -1.0], [1.0, 1.0]], atol=8)  # float32 of 1e8 is coarse
    small = centred(np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(small, [[-2.0, -1.0], [0.0, 3.0], [2.0, -2.0]], atol=1e-6)


@pytest.fixture(scope="module")
def lake(digits_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("diversity") / "lake"
    shutil.copytree(digits_lake["lake"], root)
    return {"root": root, "run": digits_lake["result"].run_id}


@pytest.mark.lake
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


@pytest.mark.lake
def test_near_duplicates_follow_the_threshold_and_are_stored(lake):
    loose = diversity(lake["root"], lake["run"], "enc.8x8_block0", threshold=2.001).to_pylist()  # cosine distance <= 2
    assert all(r["near_duplicate_pairs"] == r["samples"] * (r["samples"] - 1) // 2 for r in loose)
    strict = diversity(lake["root"], lake["run"], "enc.8x8_block0", threshold=0.0).to_pylist()
    assert all(r["near_duplicate_pairs"] == 0 and r["example_pair"] == [] for r in strict)
    stored = connect(lake["root"]).sql("SELECT DISTINCT threshold FROM diversity WHERE layer = 'enc.8x8_block0'"
                                       " ORDER BY 1").fetchall()
    assert stored == [(0.0,), (2.001,)]


def test_defaults_steps_and_pairs(tmp_path, monkeypatch):
    import store.diversity

    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 2, 5)) + 4.0
    classes = np.array([0] * 14 + [1] * 14 + [2] * 2)
    x[29, 0] = x[28, 0] * (1 + 1e-4)  # class 2 at step 0: a near-duplicate pair of two samples
    x[29, 1] = -x[28, 1]
    write_vectors_run(tmp_path, "run", {"l": x}, classes)
    monkeypatch.setattr(store.diversity, "MAX_GROUP", 8)
    default = diversity(tmp_path, "run", "l").to_pylist()
    explicit = diversity(tmp_path, "run", "l", step=1, k=10, threshold=0.01, seed=0).to_pylist()
    assert default == explicit and default[0]["step"] == 1
    first = {r["label"]: r for r in diversity(tmp_path, "run", "l", step=0, threshold=1e-6).to_pylist()}
    assert first["2"]["near_duplicate_pairs"] == 1 and first["2"]["example_pair"] == [28, 29]
    centred0 = x[:, 0] - x[:, 0].mean(0)
    assert first["0"]["vendi_score"] != default[0]["vendi_score"]
    rng0 = np.random.default_rng(0)
    members = np.sort(rng0.choice(np.arange(14), 8, replace=False))
    assert first["0"]["vendi_score"] == pytest.approx(loop_figures(centred0[members], 1e-6)["vendi"], rel=1e-5)


def test_labels_of_a_prompt_run(tmp_path):
    from store.diversity import labels_of
    from store.lake import Lake
    from store.synthetic import write_run

    write_run(tmp_path, "prompts", 12, ["a cat", "a dog"], clusters=2)
    labels = labels_of(Lake(tmp_path), "prompts", np.arange(12))
    assert set(labels) == {"a cat", "a dog"} and labels.dtype == object
