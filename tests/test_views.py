"""DuckDB views over a real lake made by ingest: counts, captured layers, the exact k-NN macro."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

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
    similarity = con.sql("SELECT array_cosine_similarity(vector::FLOAT[64], vector::FLOAT[64]) FROM activations "
                         "WHERE layer = 'enc.2x2_block0' AND pooling = 'mean' LIMIT 1").fetchall()[0][0]
    assert abs(similarity - 1) < 1e-5
    shard = next((digits_lake["lake"] / "activations").rglob("chunk-*.parquet"))
    assert pq.read_schema(shard).field("vector").type.list_size in (32, 64, 128, 256)


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

    n, chunk = 2400, 32
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
            metadata = read_run_samples(Lake(tmp_path), "busy").num_rows
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
