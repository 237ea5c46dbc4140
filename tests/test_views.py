"""DuckDB views over a real lake made by ingest: counts, captured layers, the exact k-NN macro, the latest
complete run of each model, and every query of sql/examples.sql."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import connect
from store.views import render_views
from store.lake import Lake


def test_views_see_the_ingested_run(digits_lake):
    con = connect(digits_lake["lake"])
    run = con.sql("SELECT run_id, model, status, n_samples, world_size FROM runs").fetchall()
    assert run == [(digits_lake["result"].run_id, "digits-dmd2", "complete", 300, 1)]
    assert con.sql("SELECT count(*), count(DISTINCT sample_id) FROM samples").fetchall()[0] == (300, 300)
    counts = dict(con.sql("SELECT class_name, count(*) FROM samples GROUP BY 1").fetchall())
    assert sum(counts.values()) == 300 and set(counts) == {str(i) for i in range(10)}
    captured = con.sql("SELECT layer, pooling, dim, vectors FROM captured ORDER BY ALL").fetchall()
    assert ("enc.8x8_block0", "grid2", 128, 300) in captured and ("enc.2x2_block0", "mean", 64, 300) in captured
    assert len(captured) == 6


def test_knn_exact_matches_numpy(digits_lake):
    con = connect(digits_lake["lake"])
    run_id = digits_lake["result"].run_id
    got = con.sql(f"SELECT sample_id, distance FROM knn_exact('{run_id}', 17, 'enc.2x2_block0', 'mean', 0, 5)").fetchall()
    table = con.sql("SELECT sample_id, vector FROM activations WHERE layer = 'enc.2x2_block0' AND pooling = 'mean' "
                    "ORDER BY sample_id").to_arrow_table()
    ids = np.asarray(table.column("sample_id"))
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    distances = 1 - unit @ unit[ids == 17][0]
    order = [i for i in np.argsort(distances, kind="stable") if ids[i] != 17][:5]
    assert [g[0] for g in got] == ids[order].tolist()
    np.testing.assert_allclose([g[1] for g in got], distances[order], atol=1e-5)


def test_vectors_are_fixed_size_and_castable_to_arrays(digits_lake):
    con = connect(digits_lake["lake"])
    layer, pooling = "enc.2x2_block0", "mean"
    shards = sorted((digits_lake["lake"] / "activations").glob(f"*/{layer}/{pooling}/chunk-*.parquet"))
    assert shards and all(pq.read_schema(s).field("vector").type.list_size == 64 for s in shards)
    stored = pa.concat_tables(pq.read_table(s, columns=["sample_id", "step", "vector"]) for s in shards)
    expected = {(i, t): v for i, t, v in zip(stored.column("sample_id").to_pylist(), stored.column("step").to_pylist(),
                                             np.stack(stored.column("vector").to_numpy(zero_copy_only=False)))}
    rows = con.sql(f"SELECT sample_id, step, dim, vector::FLOAT[64] FROM activations "
                   f"WHERE layer = '{layer}' AND pooling = '{pooling}'").fetchall()
    assert len(rows) == len(expected) == 300 and {r[2] for r in rows} == {64}
    for sample_id, step, _, vector in rows:  # the view's values are exactly the shards' float32 values
        np.testing.assert_array_equal(np.asarray(vector, dtype=np.float32), expected[(sample_id, step)])
    a, b = expected[(3, 0)].astype(np.float64), expected[(250, 0)].astype(np.float64)
    cosine = con.sql(f"SELECT array_cosine_similarity(x.vector::FLOAT[64], y.vector::FLOAT[64]) "
                     f"FROM activations x, activations y WHERE x.layer = '{layer}' AND y.layer = '{layer}' "
                     f"AND x.pooling = '{pooling}' AND y.pooling = '{pooling}' AND x.sample_id = 3 AND y.sample_id = 250"
                     ).fetchall()[0][0]
    expected_cosine = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert abs(expected_cosine) < 0.999  # two different vectors, so the check is not cos(v, v)
    assert cosine == pytest.approx(expected_cosine, abs=1e-5)


def test_empty_lake_has_empty_views_with_columns(tmp_path):
    con = connect(tmp_path)
    assert con.sql("SELECT count(*) FROM samples").fetchall()[0] == (0,)
    assert "image_png" in con.sql("SELECT * FROM samples").columns
    assert con.sql("SELECT count(*) FROM runs").fetchall()[0] == (0,)


def test_lake_path_with_quotes_is_escaped(tmp_path):
    from store.lake import SAMPLES_SCHEMA

    odd = tmp_path / "it's a lake"
    Lake(odd).write_parquet(SAMPLES_SCHEMA.empty_table(), "samples", "r", "chunk-000000.parquet")
    assert "it''s a lake" in render_views(Lake(odd))
    assert connect(odd).sql("SELECT count(*) FROM samples").fetchall()[0] == (0,)


def test_readers_see_only_complete_shards_while_ingest_writes(tmp_path):
    """A reader loop (the SQL views and the dashboard's sample reads) runs against a lake that ingest is
    writing: no query may fail, and every count must be a whole number of chunks."""
    import subprocess
    import sys
    import time

    from store.catalogue import read_run_samples
    from tests.conftest import REPO

    n, chunk = 960, 32
    writer = subprocess.Popen([sys.executable, "-m", "ingest", "run", "--lake", str(tmp_path), "--n", str(n),
                               "--layers", "enc.8x8_block0,dec.8x8_block1", "--chunk-size", str(chunk),
                               "--batch", "16", "--run-id", "busy", "--quiet"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    observations = []
    try:
        while writer.poll() is None or not observations:
            if not (tmp_path / "samples" / "busy").exists():
                time.sleep(0.02)
                continue
            con = connect(tmp_path)
            samples = con.sql("SELECT count(*), count(DISTINCT sample_id) FROM samples").fetchall()[0]
            per_layer = con.sql("SELECT layer, count(*) FROM activations GROUP BY layer").fetchall()
            try:
                metadata = read_run_samples(Lake(tmp_path), "busy").num_rows
            except FileNotFoundError:  # the folder exists, its first shard is still a temporary
                metadata = 0
            observations.append((samples, per_layer, metadata))
    finally:
        out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert len(observations) >= 3  # the loop really overlapped the writes
    for (total, distinct), per_layer, metadata in observations:
        assert total == distinct and (total % chunk == 0 or total == n)
        assert metadata % chunk == 0 or metadata == n
        for _, vectors in per_layer:  # activation shards are written before their chunk's samples shard
            assert vectors % chunk == 0 or vectors == n
    assert observations[-1][0] == (n, n)


def test_a_corrupt_shard_is_named_and_the_rest_stays_readable(digits_lake, tmp_path):
    import shutil

    import pytest

    from store.views import CorruptShardWarning

    lake = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    before = connect(lake).sql("SELECT count(*) FROM samples").fetchall()[0][0]
    shard = sorted((lake / "samples").rglob("chunk-000001.parquet"))[0]
    rows = pq.read_metadata(shard).num_rows
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # torn by a disk error, say
    with pytest.warns(CorruptShardWarning, match=str(shard)):
        con = connect(lake)
    assert con.sql("SELECT count(*) FROM samples").fetchall()[0][0] == before - rows
    assert con.sql("SELECT count(*) FROM activations").fetchall()[0][0] > 0


EXAMPLE_LAYER = "enc.8x8_block0"  # the layer sql/examples.sql names: in the demo and in `digits_lake`


def example_statements(con) -> list[str]:
    """sql/examples.sql split into its statements by DuckDB's own parser (what the shell does with `.read`)."""
    from tests.conftest import REPO

    return [s.query.strip() for s in con.extract_statements((REPO / "sql" / "examples.sql").read_text())]


def numpy_knn(lake, run_id: str, layer: str, sample: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-NN of one sample at step 0, mean pooling, in numpy (float64), ties by sample id."""
    from store.vectors import load_matrix

    ids, vectors = load_matrix(lake, run_id, layer, "mean", 0)
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    distances = 1 - unit @ unit[ids == sample][0]
    order = [i for i in np.lexsort((ids, distances)) if ids[i] != sample][:k]
    return ids[order], distances[order]


def test_every_example_query_runs_and_returns_rows(digits_lake):
    import re

    import duckdb
    import pytest

    from tests.conftest import REPO

    con = connect(digits_lake["lake"])
    statements = example_statements(con)
    text = (REPO / "sql" / "examples.sql").read_text()
    assert len(statements) == len(re.findall(r"^(?:SELECT|WITH)\b", text, re.MULTILINE)) > 0
    for statement in statements:
        try:
            rows = con.sql(statement).fetchall()
        except duckdb.Error as err:
            pytest.fail(f"{statement}\n-> {str(err).splitlines()[0]}")
        assert rows, f"no rows from:\n{statement}"


def test_the_neighbour_examples_agree_with_numpy(digits_lake):
    """The knn example (joined with points) keeps the nearest-first order; the cosine example's similarities
    are those numpy computes."""
    con = connect(digits_lake["lake"])
    run_id = digits_lake["result"].run_id
    knn = next(s for s in example_statements(con) if "knn_exact(" in s)
    rows = con.sql(knn).fetchall()
    ids, distances = numpy_knn(digits_lake["lake"], run_id, EXAMPLE_LAYER, 42, 10)
    assert [r[0] for r in rows] == ids.tolist()
    np.testing.assert_allclose([r[1] for r in rows], distances, atol=1e-5)
    classes = dict(con.sql(f"SELECT sample_id, class_name FROM points WHERE run_id = '{run_id}'").fetchall())
    assert [r[2] for r in rows] == [classes[i] for i in ids.tolist()]
    cosine = next(s for s in example_statements(con) if "list_cosine_similarity(" in s)
    rows = con.sql(cosine).fetchall()
    ids, distances = numpy_knn(digits_lake["lake"], run_id, EXAMPLE_LAYER, 0, 5)
    assert [r[0] for r in rows] == ids.tolist()
    np.testing.assert_allclose([r[1] for r in rows], 1 - distances, atol=1e-5)


def test_knn_exact_is_nearest_first_and_equals_numpy_exact_knn(digits_lake):
    con = connect(digits_lake["lake"], threads=2)
    run_id = digits_lake["result"].run_id
    got = con.sql(f"SELECT sample_id, distance FROM knn_exact('{run_id}', 42, '{EXAMPLE_LAYER}', 'mean', 0, 299)"
                  ).fetchall()
    assert [(d, s) for s, d in got] == sorted((d, s) for s, d in got)  # nearest first, ties by sample id
    ids, distances = numpy_knn(digits_lake["lake"], run_id, EXAMPLE_LAYER, 42, 299)
    assert sorted(s for s, _ in got) == sorted(ids.tolist()) and len(got) == 299
    exact = dict(zip(ids.tolist(), distances))
    np.testing.assert_allclose([d for _, d in got], [exact[s] for s, _ in got], atol=1e-5)
    in_order = np.array([exact[s] for s, _ in got])
    assert (np.diff(in_order) > -1e-5).all()  # numpy agrees with the order, up to float32 rounding
    top = con.sql(f"SELECT sample_id FROM knn_exact('{run_id}', 42, '{EXAMPLE_LAYER}', 'mean', 0, 10)").fetchall()
    assert [s for s, in top] == ids[:10].tolist()


def add_run_events(lake, template: dict, runs: list[tuple[str, str, str, int, int]]) -> None:
    """Status events of made-up runs (run id, model, status, hours after the template, world size), rank 0
    only, each a copy of `template` (a runs row)."""
    import datetime as dt

    import pyarrow as pa

    from store.lake import RUNS_SCHEMA, runs_parts

    for run_id, model, status, hours, world_size in runs:
        stamp = template["updated_at"] + dt.timedelta(hours=hours)
        event = template | {"run_id": run_id, "model": model, "status": status, "world_size": world_size,
                            "updated_at": stamp, "started_at": stamp - dt.timedelta(minutes=5)}
        Lake(lake).write_parquet(pa.Table.from_pylist([event], schema=RUNS_SCHEMA),
                                 *runs_parts(run_id, 0, stamp, status))


def lake_with_newer_unfinished_runs(digits_lake, tmp_path):
    """A copy of `digits_lake` whose complete run is followed by a newer running, failed and half-complete run
    of the same model, and preceded by a complete run of another model."""
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    template = Lake(lake).read_runs(digits_lake["result"].run_id).sort_by([("updated_at", "descending")]).to_pylist()[0]
    add_run_events(lake, template, [("newer-running", "digits-dmd2", "running", 1, 1),
                                    ("newer-failed", "digits-dmd2", "failed", 2, 1),
                                    ("newer-half", "digits-dmd2", "complete", 3, 2),  # rank 1 of 2 never finished
                                    ("gen-x-0123456789", "digits-dmd2", "complete", 4, 1),  # "Generate and place"
                                    ("older-teacher", "digits-edm", "complete", -1, 1)])
    return lake


def test_latest_runs_is_the_newest_complete_run_of_each_model(digits_lake, tmp_path):
    lake = lake_with_newer_unfinished_runs(digits_lake, tmp_path)
    con = connect(lake)
    statuses = dict(con.sql("SELECT run_id, status FROM runs").fetchall())
    assert statuses == {digits_lake["result"].run_id: "complete", "newer-running": "running",
                        "newer-failed": "failed", "newer-half": "running", "older-teacher": "complete",
                        "gen-x-0123456789": "complete"}
    latest = con.sql("SELECT model, run_id FROM latest_runs ORDER BY model").fetchall()
    assert latest == [("digits-dmd2", digits_lake["result"].run_id), ("digits-edm", "older-teacher")]
    (tmp_path / "empty").mkdir()
    assert connect(tmp_path / "empty").sql("SELECT count(*) FROM latest_runs").fetchall() == [(0,)]


def test_latest_run_skips_newer_unfinished_runs(digits_lake, tmp_path):
    import pytest

    from store.embed import EmbedError, latest_run

    lake = lake_with_newer_unfinished_runs(digits_lake, tmp_path)
    assert latest_run(Lake(lake)) == digits_lake["result"].run_id
    template = Lake(lake).read_runs("newer-failed").to_pylist()[0]
    unfinished = tmp_path / "unfinished"
    add_run_events(unfinished, template, [("stalled", "digits-dmd2", "running", 0, 1),
                                          ("broken", "digits-dmd2", "failed", 1, 1)])
    with pytest.raises(EmbedError, match=r"no complete run .*the newest, broken, is failed.*make ingest") as err:
        latest_run(Lake(unfinished))
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedError, match="no runs in lake"):
        latest_run(Lake(tmp_path / "empty"))


@pytest.mark.parametrize("name", ["lake[1]", "lake*", "lake?x"])
def test_lake_paths_with_glob_characters_read_their_own_files(digits_lake, tmp_path, name):
    """DuckDB expands `[`, `*` and `?` even in file lists: a lake under `lake[1]` must not read `lake1`'s
    files, nor fail. A decoy lake next to it, which the unescaped pattern would also match, holds all 300
    samples; the lake itself only its first two chunks."""
    import shutil

    from store.views import connect

    lake = tmp_path / name
    shutil.copytree(digits_lake["lake"], lake)
    decoy = tmp_path / name.replace("[1]", "1").replace("*", "-decoy").replace("?", "y")
    shutil.copytree(digits_lake["lake"], decoy)
    for shard in lake.rglob("chunk-000002.parquet"):
        shard.unlink()
    con = connect(lake)
    assert con.sql("SELECT count(*) FROM samples").fetchall()[0][0] == 256
    assert con.sql("SELECT count(DISTINCT sample_id) FROM activations").fetchall()[0][0] == 256
