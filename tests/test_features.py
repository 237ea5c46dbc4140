"""ingest.features: reference features of the digits lake's run stored like activations: every committed
sample, deterministic, read by load_matrix, the views and the store's tools; resumed, crash-safe, and
refused in one line (writing nothing) when the run, its samples or the extractor are wrong."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ingest.cli import main
from ingest.extractors import ExtractorError, resolve_extractor
from ingest.features import FeaturesError, extract_features
from store.lake import Lake, activations_parts
from store.shards import CorruptShardWarning
from store.vectors import load_matrix
from tests.conftest import REPO

LAYER = "features.digits"


@pytest.fixture()
def lake(digits_lake, tmp_path) -> Path:
    copy = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], copy)
    return copy


@pytest.fixture()
def run_id(digits_lake) -> str:
    return digits_lake["result"].run_id


def files(root: Path) -> dict[str, int]:
    """Every file under a folder (hidden ones too), with its modification time."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()} \
        if root.exists() else {}


def shard(lake: Path, run_id: str, chunk: int, layer: str = LAYER) -> Path:
    return Path(Lake(lake).path(*activations_parts(run_id, layer, "mean", chunk)))


def sample_ids(lake: Path, run_id: str) -> np.ndarray:
    return np.sort(pq.read_table(lake / "samples" / run_id, columns=["sample_id"]).column("sample_id").to_numpy())


def test_features_of_every_committed_sample(lake, run_id):
    result = extract_features(lake, run_id, "digits", progress=False)
    assert (result.layer, result.written, result.skipped, result.samples) == (LAYER, [0, 1, 2], 0, 300)
    ids, vectors = load_matrix(lake, run_id, LAYER)
    assert np.array_equal(ids, sample_ids(lake, run_id))
    assert vectors.shape == (300, 64) and np.isfinite(vectors).all()
    table = pq.read_table(shard(lake, run_id, 0))
    assert set(table.column("step").to_pylist()) == {0} and set(table.column("noise_level").to_pylist()) == {0.0}
    assert set(table.column("pooling").to_pylist()) == {"mean"} and set(table.column("layer").to_pylist()) == {LAYER}

    import store

    con = store.connect(lake)
    row = con.sql("SELECT layer, pooling, step, dim, vectors FROM captured WHERE run_id = $run AND layer = $layer",
                  params={"run": run_id, "layer": LAYER}).fetchall()
    assert row == [(LAYER, "mean", 0, 64, 300)]
    first = con.sql("SELECT vector FROM activations WHERE run_id = $run AND layer = $layer AND sample_id = $id",
                    params={"run": run_id, "layer": LAYER, "id": int(ids[0])}).fetchall()[0][0]
    assert np.array_equal(np.asarray(first, dtype=np.float32), vectors[0])


def test_features_are_deterministic(lake, run_id, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(lake, other)
    extract_features(lake, run_id, "digits", progress=False)
    extract_features(other, run_id, "digits", batch=37, progress=False)  # other batches, same bits
    for chunk in range(3):
        a, b = pq.read_table(shard(lake, run_id, chunk)), pq.read_table(shard(other, run_id, chunk))
        assert a.equals(b)
    a, b = load_matrix(lake, run_id, LAYER)[1], load_matrix(other, run_id, LAYER)[1]
    assert a.tobytes() == b.tobytes()


def test_resumed_extraction_writes_only_what_is_missing(lake, run_id):
    extract_features(lake, run_id, "digits", progress=False)
    before = load_matrix(lake, run_id, LAYER)[1]
    shard(lake, run_id, 1).unlink()
    shard(lake, run_id, 2).write_bytes(b"PAR1 damaged")
    kept = shard(lake, run_id, 0).stat().st_mtime_ns
    with pytest.warns(CorruptShardWarning):
        result = extract_features(lake, run_id, "digits", progress=False)
    assert (result.written, result.skipped, result.samples) == ([1, 2], 1, 300 - 128)
    assert shard(lake, run_id, 0).stat().st_mtime_ns == kept
    assert np.array_equal(load_matrix(lake, run_id, LAYER)[1], before)
    again = extract_features(lake, run_id, "digits", progress=False)
    assert (again.written, again.skipped, again.samples) == ([], 3, 0)


def test_a_killed_extraction_resumes(lake, run_id, tmp_path):
    """SIGKILL right before the second shard's rename: one shard stored, a temporary left; the repeated
    command writes the two missing shards, deletes the temporary and ends as a clean extraction does."""
    env = {**os.environ, "DMD2_LENS_FAILPOINT": "before-rename:2"}
    killed = subprocess.run([sys.executable, "-m", "ingest", "features", "--lake", str(lake), "--run", run_id,
                             "--quiet"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    layer_files = files(lake / "activations" / run_id / LAYER)
    assert [f for f in layer_files if f.endswith(".parquet")] == ["mean/chunk-000000.parquet"]
    assert any(f.endswith(".tmp") for f in layer_files)
    result = extract_features(lake, run_id, "digits", progress=False)
    assert result.written == [1, 2]
    assert not any(f.endswith(".tmp") for f in files(lake / "activations" / run_id / LAYER))
    clean = tmp_path / "clean"
    shutil.copytree(lake, clean)
    shutil.rmtree(clean / "activations" / run_id / LAYER)
    extract_features(clean, run_id, "digits", progress=False)
    assert load_matrix(lake, run_id, LAYER)[1].tobytes() == load_matrix(clean, run_id, LAYER)[1].tobytes()


def test_the_features_mean_something_and_the_store_reads_them(lake, run_id):
    """Generated digits: each one's nearest neighbours in the digits feature space carry its class, far more
    than in the generator's own first block; per-class diversity and the neighbour graph take the layer."""
    from store.diversity import diversity, labels_of
    from store.metrics import knn_purity
    from store.neighbours import build_graph

    extract_features(lake, run_id, "digits", progress=False)
    ids, vectors = load_matrix(lake, run_id, LAYER)
    labels = labels_of(Lake(lake), run_id, ids)
    purity = knn_purity(vectors, labels, k=10).mean()
    raw = knn_purity(load_matrix(lake, run_id, "enc.8x8_block0")[1], labels, k=10).mean()
    assert purity > 0.9 and purity > raw, (purity, raw)
    table = diversity(lake, run_id, LAYER)
    assert table.num_rows == 10 and min(table.column("knn_purity").to_pylist()) > 0.6
    graph = build_graph(lake, run_id, LAYER)
    assert np.array_equal(graph.sample_ids, ids) and graph.neighbours.shape[0] == 300


def test_another_extractor_under_the_same_name_is_refused(lake, run_id):
    extract_features(lake, run_id, "digits", progress=False)
    before = files(lake)
    other = dataclasses.replace(resolve_extractor("digits"), source="/elsewhere/digits-features.safetensors")
    with pytest.raises(FeaturesError) as err:
        extract_features(lake, run_id, other, progress=False)
    message = str(err.value)
    assert "\n" not in message and "holds features of" in message and "--name" in message
    assert files(lake) == before
    renamed = extract_features(lake, run_id, other, name="digits-other", progress=False)
    assert renamed.layer == "features.digits-other" and renamed.samples == 300


@pytest.mark.parametrize("case", ["extractor", "no-run", "no-samples", "no-lake", "batch"])
def test_bad_inputs_are_one_line_and_write_nothing(lake, run_id, tmp_path, case):
    target, run, extractor, options = lake, run_id, "digits", {}
    if case == "extractor":
        extractor, error = "clipp", ExtractorError
    elif case == "no-run":
        run, error = "no-such-run", FeaturesError
    elif case == "no-samples":
        target = tmp_path / "fresh"
        shutil.copytree(lake / "runs", target / "runs")  # the run's log, none of its samples
        error = FeaturesError
    elif case == "no-lake":
        target, error = tmp_path / "absent", FeaturesError
    else:
        options, error = {"batch": 0}, ValueError
    before = files(target)
    with pytest.raises(error) as err:
        extract_features(target, run, extractor, progress=False, **options)
    message = str(err.value)
    assert "\n" not in message and "; " in message, message
    assert files(target) == before
    assert case != "no-lake" or not target.exists()


def test_command_line(lake, run_id, capsys):
    assert main(["features", "--lake", str(lake), "--run", run_id, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"layer {LAYER}: 300 samples in 3 chunks" in out
    assert main(["features", "--lake", str(lake), "--run", run_id, "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out
    for args, expected in ((["--extractor", "clipp"], "error: unknown extractor 'clipp'"),
                           (["--batch", "0"], "error: --batch 0 is out of range"),
                           (["--run", "absent"], "error: no run absent")):
        assert main(["features", "--lake", str(lake), "--run", run_id, "--quiet", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(expected) and err.count("\n") == 1, err


def test_tiny_dinov2_features_of_the_lake_by_repo_id(lake, run_id, encoder_hub):
    result = extract_features(lake, run_id, "tiny-org/dinov2", batch=64, progress=False)
    assert result.layer == "features.dinov2" and result.samples == 300
    ids, vectors = load_matrix(lake, run_id, "features.dinov2")
    assert vectors.shape == (300, encoder_hub["dims"]["dinov2"])
    assert np.array_equal(ids, sample_ids(lake, run_id))
