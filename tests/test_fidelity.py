"""Fidelity and diversity against a reference run: the metrics against values computed by hand (or by a
brute-force reading of their definitions), then per-class and per-prompt tables on real and synthetic
lakes, the stored table, the one-line reading and the command line."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pyarrow as pa
import pytest

from store import connect
from store.fidelity import (FidelityError, density_coverage, fidelity, frechet_distance, precision_recall, reading,
                            readings)
from store.lake import Lake, activations_parts, activations_schema, fidelity_parts
from store.metrics import vendi_score
from store.vectors import MissingLayerError, load_matrix

LAYER = "dec.8x8_block1"


# --- the metrics --------------------------------------------------------------------------------------

def exact_sample(mean, cov, n: int, seed: int) -> np.ndarray:
    """n points whose sample mean and sample covariance (ddof 1) are exactly `mean` and `cov`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance exactly I
    return np.asarray(mean, dtype=float) + z @ np.linalg.cholesky(np.asarray(cov, dtype=float)).T


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """Precision, recall, density and coverage read off their definitions, one pair at a time ("inside a
    ball": strictly closer than its radius, the distance to the centre's k-th nearest other sample)."""
    def radius(points, i):
        return sorted(math.dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    fake_r = [radius(fake, j) for j in range(len(fake))]
    holds = [[math.dist(f, r) < real_r[i] for i, r in enumerate(real)] for f in fake]
    return {"precision": np.mean([any(h) for h in holds]),
            "recall": np.mean([any(math.dist(r, f) < fake_r[j] for j, f in enumerate(fake)) for r in real]),
            "density": sum(map(sum, holds)) / (k * len(fake)),
            "coverage": np.mean([any(h[i] for h in holds) for i in range(len(real))])}


def test_identical_sets():
    x = np.random.default_rng(0).normal(size=(200, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert precision_recall(x, x, k=5) == (1.0, 1.0)
    # Each ball holds its own centre and the 4 neighbours strictly closer than its radius (the 5th):
    # 5 balls per sample, over k = 5.
    assert density_coverage(x, x, k=5) == (pytest.approx(1.0), 1.0)


def test_two_draws_of_one_distribution_have_density_near_one():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    density, coverage = density_coverage(real, fake, k=5)
    precision, recall = precision_recall(real, fake, k=5)
    assert 0.9 < density < 1.1 and coverage > 0.9 and precision > 0.9 and recall > 0.9


def test_one_repeated_sample_against_a_spread_set():
    spread = np.random.default_rng(2).normal(size=(300, 8))
    repeated = np.repeat(spread[:1], 300, axis=0)
    precision, recall = precision_recall(spread, repeated, k=5)
    assert precision == 1.0  # the one sample lies in its own ball
    assert recall == 0.0  # the copies' balls have radius 0: they hold nothing
    assert vendi_score(repeated - spread.mean(axis=0)) == pytest.approx(1.0, abs=1e-6)
    assert vendi_score(spread - spread.mean(axis=0)) > 5.0
    assert precision_recall(repeated, spread, k=5) == (0.0, 1.0)  # the roles, swapped


def test_precision_falls_as_a_copy_moves_away():
    real = np.random.default_rng(3).normal(size=(500, 4))
    shifts = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    precisions = [precision_recall(real, real + [s, 0, 0, 0], k=5)[0] for s in shifts]
    assert precisions[0] == 1.0 and precisions[-1] == 0.0
    assert all(a > b for a, b in zip(precisions[1:-2], precisions[2:-1])) and precisions[0] >= precisions[1]
    # A pure shift leaves the covariance: the Fréchet distance is the squared shift.
    assert [frechet_distance(real, real + [s, 0, 0, 0]) for s in shifts] == pytest.approx(np.square(shifts), abs=1e-6)


def test_frechet_distance_equals_the_closed_form():
    # Diagonal: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = (1 + 4) + ((1-2)^2 + 0 + (3-1)^2) = 10.
    a = exact_sample([0, 0, 0], np.diag([1.0, 4.0, 9.0]), 50, seed=4)
    b = exact_sample([1, 2, 0], np.diag([4.0, 4.0, 1.0]), 70, seed=5)
    assert frechet_distance(a, b) == pytest.approx(10.0, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(10.0, rel=1e-9)
    # C_a = I, C_b = [[2, 1], [1, 2]] (eigenvalues 3 and 1): Tr sqrt(C_a C_b) = sqrt 3 + 1, so the distance is
    # |mu_a - mu_b|^2 + 2 + 4 - 2 (sqrt 3 + 1) = 1 + 4 - 2 sqrt 3.
    a = exact_sample([0, 0], np.eye(2), 40, seed=6)
    b = exact_sample([1, 0], [[2.0, 1.0], [1.0, 2.0]], 40, seed=7)
    assert frechet_distance(a, b) == pytest.approx(5 - 2 * math.sqrt(3), rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_and_stands_fewer_samples_than_dimensions():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 0.5
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    textbook = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb - 2 * np.real(sqrtm(ca @ cb)))
    assert frechet_distance(a, b) == pytest.approx(textbook, rel=1e-8)
    few = rng.normal(size=(5, 20))  # rank-deficient covariances: still defined, still 0 against itself
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(frechet_distance(few, rng.normal(size=(5, 20))))
    with pytest.raises(FidelityError, match="at least 2 samples"):
        frechet_distance(few[:1], few)


def test_precision_recall_density_coverage_by_hand_in_one_dimension():
    real = np.array([0.0, 1.1, 2.0, 3.5])
    fake = np.array([0.4, 1.0, 9.0, 10.0, 11.0])
    # k = 1. Real radii: 1.1, 0.9, 0.9, 1.5; fake radii: 0.6, 0.6, 1, 1, 1.
    # precision: 0.4 (ball of 0) and 1.0 (ball of 1.1) of 5 are inside real balls -> 2/5.
    # recall: 0 (ball of 0.4) and 1.1 (ball of 1.0) of 4 are inside fake balls -> 1/2.
    # density: 0.4 and 1.0 each lie in the balls of 0 and 1.1 -> 4 / (1 * 5); coverage: 2 of 4 balls.
    assert precision_recall(real, fake, k=1) == (pytest.approx(0.4), pytest.approx(0.5))
    assert density_coverage(real, fake, k=1) == (pytest.approx(0.8), pytest.approx(0.5))
    assert precision_recall(fake, real, k=1) == (pytest.approx(0.5), pytest.approx(0.4))
    # k = 2. Real radii: 2, 1.1, 1.5, 2.4; fake radii: 8.6, 8, 2, 1, 2.
    # precision 2/5; recall: every real point lies in the ball of 0.4 -> 1; density: 0.4 in 2 balls, 1.0 in 3
    # (0, 1.1, 2) -> 5 / (2 * 5); coverage: the balls of 0, 1.1 and 2 hold a fake point, 3.5's does not -> 3/4.
    assert precision_recall(real, fake, k=2) == (pytest.approx(0.4), pytest.approx(1.0))
    assert density_coverage(real, fake, k=2) == (pytest.approx(0.5), pytest.approx(0.75))


@pytest.mark.parametrize("k", [1, 3, 7])
def test_the_metrics_agree_with_their_definitions(k):
    rng = np.random.default_rng(k)
    real, fake = rng.normal(size=(30, 3)), rng.normal(size=(40, 3)) * 1.5 + 0.3
    expected = brute_force(real, fake, k)
    assert precision_recall(real, fake, k) == (pytest.approx(expected["precision"]), pytest.approx(expected["recall"]))
    assert density_coverage(real, fake, k) == (pytest.approx(expected["density"]), pytest.approx(expected["coverage"]))
    assert expected["precision"] != expected["recall"]  # so that swapped roles would show


def test_too_few_samples_for_k_is_one_line():
    with pytest.raises(FidelityError) as err:
        precision_recall(np.zeros((3, 2)), np.ones((10, 2)), k=5)
    assert "\n" not in str(err.value) and "k < 3" in str(err.value)
    with pytest.raises(FidelityError, match="one feature space"):
        precision_recall(np.zeros((10, 2)), np.ones((10, 3)), k=5)


# --- the lake -----------------------------------------------------------------------------------------

def write_layer(root, run_id: str, layer: str, vectors_of) -> None:
    """Activation shards of a new layer for every committed chunk of a run (as a feature extractor would
    store its features): `vectors_of(ids, labels)` gives each sample's vector, labels being class ids or
    prompts."""
    rows = connect(root).sql("SELECT chunk, sample_id, coalesce(class_id::VARCHAR, prompt) FROM points "
                             "WHERE run_id = $r ORDER BY sample_id", params={"r": run_id}).fetchall()
    for chunk in sorted({c for c, _, _ in rows}):
        ids = np.array([s for c, s, _ in rows if c == chunk], dtype=np.int64)
        vectors = np.asarray(vectors_of(ids, [p for c, _, p in rows if c == chunk]), dtype=np.float32)
        n, dim = vectors.shape
        table = pa.table({"run_id": [run_id] * n, "sample_id": ids, "layer": [layer] * n, "step": np.zeros(n, np.int16),
                          "noise_level": np.zeros(n, np.float32), "pooling": ["mean"] * n,
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)},
                         schema=activations_schema(dim))
        Lake(root).write_parquet(table, *activations_parts(run_id, layer, "mean", chunk))


@pytest.fixture(scope="module")
def lake(paired_lake, tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity") / "lake"
    shutil.copytree(paired_lake["lake"], root)
    return {"root": root, "student": paired_lake["student"], "teacher": paired_lake["teacher"]}


def class_counts(root, run_id: str) -> dict[int, int]:
    rows = connect(root).sql("SELECT class_id, count(*) FROM points WHERE run_id = $r GROUP BY 1",
                             params={"r": run_id}).fetchall()
    return dict(rows)


def test_student_against_teacher_per_class(lake):
    root, student, teacher = lake["root"], lake["student"], lake["teacher"]
    rows = fidelity(root, student, teacher, LAYER).to_pylist()
    counts, reference_counts = class_counts(root, student), class_counts(root, teacher)
    assert [r["label"] for r in rows] == ["all"] + [str(c) for c in sorted(counts)]
    assert [r["kind"] for r in rows] == ["all"] + ["class"] * len(counts)
    assert rows[0]["samples"] == sum(counts.values()) == 300 and rows[0]["reference_samples"] == 300
    assert {r["class_id"]: (r["samples"], r["reference_samples"]) for r in rows[1:]} == {
        c: (counts[c], reference_counts[c]) for c in counts}
    last = connect(root).sql("SELECT max(step) FROM activations WHERE run_id = $r AND layer = $l",
                             params={"r": teacher, "l": LAYER}).fetchall()[0][0]
    assert {(r["step"], r["reference_step"], r["k"], r["layer"], r["dim"]) for r in rows} == {(0, last, 5, LAYER, 32)}
    _, mine = load_matrix(root, student, LAYER, step=0)
    _, theirs = load_matrix(root, teacher, LAYER, step=last)
    assert rows[0]["frechet_distance"] == pytest.approx(frechet_distance(mine, theirs), rel=1e-9)
    classes = np.array([c for (c,) in connect(root).sql("SELECT class_id FROM points WHERE run_id = $r "
                                                          "ORDER BY sample_id", params={"r": student}).fetchall()])
    for row in rows[1:]:
        ours, reference = mine[classes == row["class_id"]], theirs[classes == row["class_id"]]  # one plan: same ids
        assert row["frechet_distance"] == pytest.approx(frechet_distance(ours, reference), rel=1e-9)
        assert (row["precision"], row["recall"]) == pytest.approx(precision_recall(reference, ours, k=5))
        assert (row["density"], row["coverage"]) == pytest.approx(density_coverage(reference, ours, k=5))
    # Vendi scores: each run's own, as its diversity table (written by the fixture at each run's last step).
    for run_id, column in ((student, "vendi_score"), (teacher, "reference_vendi_score")):
        stored = dict(connect(root).sql("SELECT label, vendi_score FROM diversity WHERE run_id = $r AND layer = $l "
                                        "AND pooling = 'mean'", params={"r": run_id, "l": LAYER}).fetchall())
        assert {r["label"]: r[column] for r in rows[1:]} == pytest.approx(stored, rel=1e-9)


def test_a_narrow_student_keeps_precision_and_loses_recall(lake):
    """A feature layer written for both runs: per class, the teacher spread around a class centre, the
    student packed near it (mode dropping)."""
    root, student, teacher = lake["root"], lake["student"], lake["teacher"]
    centres = np.random.default_rng(10).normal(size=(10, 8)) * 20

    def features_of(scale: float, seed: int):
        return lambda ids, labels: (centres[[int(c) for c in labels]]
                                    + scale * np.random.default_rng(seed).normal(size=(len(ids), 8)))

    write_layer(root, student, "features.test", features_of(0.3, 1))
    write_layer(root, teacher, "features.test", features_of(1.0, 2))
    rows = fidelity(root, student, teacher, "features.test").to_pylist()
    _, mine = load_matrix(root, student, "features.test")
    _, theirs = load_matrix(root, teacher, "features.test")
    classes = np.array([c for (c,) in connect(root).sql("SELECT class_id FROM points WHERE run_id = $r "
                                                          "ORDER BY sample_id", params={"r": student}).fetchall()])
    for row in rows[1:]:
        ours, reference = mine[classes == row["class_id"]], theirs[classes == row["class_id"]]
        assert row["precision"] > 0.9 and row["recall"] < 0.5 and row["density"] > 1.0, row
        assert (row["precision"], row["recall"]) == pytest.approx(precision_recall(reference, ours, k=5))
    itself = fidelity(root, teacher, teacher, "features.test").to_pylist()
    names = {student: "student", teacher: "teacher"}
    assert reading(rows[2], itself[2], names=names) == (f"class {rows[2]['label']}: student recall "
                                                        f"{rows[2]['recall']:.2f} vs teacher 1.00 against teacher")


def test_a_run_against_itself(lake):
    rows = fidelity(lake["root"], lake["teacher"], lake["teacher"], "enc.8x8_block0").to_pylist()
    for row in rows:
        assert row["frechet_distance"] == pytest.approx(0.0, abs=1e-6)
        assert (row["precision"], row["recall"], row["coverage"]) == (1.0, 1.0, 1.0)
        assert row["density"] == pytest.approx(1.0)
        assert row["vendi_score"] == row["reference_vendi_score"]


def test_the_stored_table_is_the_view(lake):
    root, student, teacher = lake["root"], lake["student"], lake["teacher"]
    table = fidelity(root, student, teacher, "enc.2x2_block0", pooling="grid2", k=3)
    row = table.to_pylist()[0]
    stored = Lake(root).path(*fidelity_parts(student, teacher, "enc.2x2_block0", "grid2", 0, 3, row["reference_step"]))
    assert stored.endswith(f"/fidelity/{student}/{teacher}/enc.2x2_block0/grid2/step-0000-k3-ref"
                           f"{row['reference_step']:04d}.parquet")
    viewed = connect(root).sql("SELECT * FROM fidelity WHERE layer = 'enc.2x2_block0' AND pooling = 'grid2' "
                               "AND k = 3").arrow().read_all()
    key = lambda r: (r["kind"] != "all", r["class_id"] or 0)  # noqa: E731
    assert viewed.schema.names == table.schema.names
    assert sorted(viewed.to_pylist(), key=key) == table.to_pylist()


def test_too_few_samples_give_nulls(lake):
    root, student, teacher = lake["root"], lake["student"], lake["teacher"]
    rows = fidelity(root, student, teacher, LAYER, k=50).to_pylist()  # every class has fewer than 51 samples
    assert rows[0]["precision"] is not None and rows[0]["frechet_distance"] is not None
    for row in rows[1:]:
        assert row["frechet_distance"] is not None and row["vendi_score"] is not None
        assert (row["precision"], row["recall"], row["density"], row["coverage"]) == (None,) * 4
    rows = fidelity(root, student, teacher, LAYER, min_samples=301).to_pylist()
    assert all(r["frechet_distance"] is None and r["recall"] is None and r["vendi_score"] > 1 for r in rows)


def test_a_mismatched_layer_is_one_line(lake):
    root, student, teacher = lake["root"], lake["student"], lake["teacher"]
    with pytest.raises(MissingLayerError) as err:
        fidelity(root, student, teacher, "features.absent")
    assert "features.absent" in str(err.value) and "\n" not in str(err.value)
    rng = np.random.default_rng(0)
    write_layer(root, student, "features.narrow", lambda ids, _: rng.normal(size=(len(ids), 3)))
    write_layer(root, teacher, "features.narrow", lambda ids, _: rng.normal(size=(len(ids), 5)))
    with pytest.raises(FidelityError) as err:
        fidelity(root, student, teacher, "features.narrow")
    assert "3 dimensions" in str(err.value) and "but 5" in str(err.value) and "\n" not in str(err.value)
    assert not (root / "fidelity" / student / teacher / "features.narrow").exists()


def test_prompt_runs_are_matched_by_prompt(tmp_path):
    from store.synthetic import write_run

    root = tmp_path / "lake"
    write_run(root, "texts", 150, ["a cat", "a dog", "a cow"], seed=3)
    write_run(root, "real", 150, ["a cat", "a dog", "a bird"], seed=3)  # same seed: same clusters per sample

    def base(ids):
        return np.stack([np.random.default_rng(int(i)).normal(size=4) for i in ids])

    write_layer(root, "texts", "features.test", lambda ids, labels: base(ids))
    write_layer(root, "real", "features.test",
                lambda ids, labels: base(ids) + np.outer([p == "a dog" for p in labels], [100.0, 0, 0, 0]))
    rows = {r["label"]: r for r in fidelity(root, "texts", "real", "features.test").to_pylist()}
    assert list(rows) == ["all", "a bird", "a cat", "a cow", "a dog"]
    assert {r["kind"] for label, r in rows.items() if label != "all"} == {"prompt"}
    cat, dog, cow, bird = rows["a cat"], rows["a dog"], rows["a cow"], rows["a bird"]
    assert cat["frechet_distance"] == pytest.approx(0.0, abs=1e-5) and (cat["precision"], cat["recall"]) == (1.0, 1.0)
    assert dog["frechet_distance"] == pytest.approx(100.0**2, rel=1e-4) and (dog["precision"], dog["recall"]) == (0, 0)
    assert cow["reference_samples"] == 0 and cow["samples"] > 0 and cow["reference_vendi_score"] is None
    assert cow["frechet_distance"] is None and cow["vendi_score"] is not None
    assert bird["samples"] == 0 and bird["reference_samples"] == cow["samples"] and bird["vendi_score"] is None
    assert rows["all"]["samples"] == rows["all"]["reference_samples"] == 150


# --- reading and the command line -----------------------------------------------------------------------

def test_reading_of_two_runs_against_one_reference():
    row = {"run_id": "s", "reference_run": "real", "layer": "f", "pooling": "mean", "kind": "class", "label": "1",
           "recall": 0.41, "frechet_distance": 12.345}
    other = row | {"run_id": "t", "recall": 0.78, "frechet_distance": None}
    names = {"s": "student", "t": "teacher", "real": "real digits"}
    assert reading(row, other, names=names) == "class 1: student recall 0.41 vs teacher 0.78 against real digits"
    assert reading(row, other, "frechet_distance") == "class 1: s frechet distance 12.3 vs t n/a against real"
    assert readings([row, row | {"label": "2"}], [other], names=names) == [reading(row, other, names=names)]
    with pytest.raises(FidelityError, match="differ in reference_run"):
        reading(row, other | {"reference_run": "teacher"})
    with pytest.raises(FidelityError, match="unknown metric"):
        reading(row, other, "accuracy")


def test_command_prints_the_tables_and_the_readings(lake, capsys):
    from store.cli import main

    root, student, teacher = lake["root"], lake["student"], lake["teacher"]
    code = main(["fidelity", "--lake", str(root), "--run", f"{student},{teacher}", "--reference", teacher,
                 "--layer", "enc.8x8_block0", "--k", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{student} against {teacher} · enc.8x8_block0" in out and f"{teacher} against {teacher}" in out
    assert f"class 3: {student} recall " in out and f" vs {teacher} 1.00 against {teacher}" in out
    stored = connect(root).sql("SELECT count(*) FROM fidelity WHERE k = 4").fetchall()[0][0]
    assert stored == 2 * (1 + len(class_counts(root, student)))


@pytest.mark.parametrize("args, expected", [(["--k", "0"], "--k 0 is out of range"),
                                            (["--min-samples", "1"], "--min-samples 1 is out of range"),
                                            (["--layer", "features.absent"], "no vectors for run")])
def test_command_errors_are_one_line(lake, capsys, args, expected):
    from store.cli import main

    argv = ["fidelity", "--lake", str(lake["root"]), "--run", lake["student"], "--reference", lake["teacher"],
            "--layer", "enc.8x8_block0", *args]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and expected in err, err
