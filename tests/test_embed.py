"""`make embed` on the embedded model's lake: layouts per layer, reuse, alignment, separation, errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from store import connect
from store.embed import EmbedError, embed_run
from store.layouts import mean_displacement
from tests.conftest import REPO


@pytest.fixture(scope="module")
def embedded(embedded_lake) -> dict:
    return embedded_lake


def layout_of(con, layer: str) -> tuple[np.ndarray, np.ndarray]:
    rows = con.sql(f"SELECT x, y, class_id FROM map_points WHERE layer = '{layer}' ORDER BY sample_id").fetchall()
    return np.array([r[:2] for r in rows]), np.array([r[2] for r in rows])


def test_every_captured_layer_gets_a_layout(embedded):
    assert [r.layer for r in embedded["results"]] == ["enc.8x8_block0", "enc.2x2_block0", "dec.8x8_block1"]
    con = connect(embedded["lake"])
    layouts = con.sql("SELECT layer, points, step, pooling FROM layouts ORDER BY layer").fetchall()
    assert layouts == [("dec.8x8_block1", 300, 0, "mean"), ("enc.2x2_block0", 300, 0, "mean"),
                       ("enc.8x8_block0", 300, 0, "mean")]
    audit = con.sql("SELECT min(knn_overlap), max(knn_overlap) FROM embeddings").fetchall()[0]
    assert 0 <= audit[0] <= audit[1] <= 1


def test_digit_classes_form_separate_regions_in_some_layer(embedded):
    con = connect(embedded["lake"])
    purities = []
    for result in embedded["results"]:
        xy, labels = layout_of(con, result.layer)
        d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        nearest = np.argsort(d, axis=1)[:, :10]
        purities.append((labels[nearest] == labels[:, None]).mean())
    assert max(purities) > 0.9


def test_same_request_reuses_stored_layouts(embedded):
    again = embed_run(str(embedded["lake"]), progress=False)
    assert all(r.reused for r in again)
    assert [r.params_hash for r in again] == [r.params_hash for r in embedded["results"]]


def test_alignment_keeps_points_closer_than_independent_layouts(embedded, tmp_path):
    lake = tmp_path / "lake"  # a copy: the shared embedded lake must keep one layout per layer
    shutil.copytree(embedded["lake"], lake)
    con = connect(lake)
    independent = embed_run(str(lake), layers=["enc.2x2_block0", "dec.8x8_block1"], align=False, progress=False)
    assert not any(r.reused for r in independent)
    aligned = {r.layer: r for r in embedded["results"]}
    by_hash = {}
    for r in independent:
        rows = con.sql(f"SELECT x, y FROM embeddings WHERE params_hash = '{r.params_hash}' ORDER BY sample_id").fetchall()
        by_hash[r.layer] = np.array(rows)
    unaligned_move = mean_displacement(by_hash["enc.2x2_block0"], by_hash["dec.8x8_block1"])
    assert aligned["dec.8x8_block1"].displacement < unaligned_move


def test_missing_layer_and_run_are_reported(embedded, tmp_path):
    with pytest.raises(EmbedError, match="layer dec.8x8_up was not captured"):
        embed_run(str(embedded["lake"]), layers=["dec.8x8_up"], progress=False)
    with pytest.raises(EmbedError, match="no runs in lake"):
        embed_run(str(tmp_path), progress=False)
    from ingest.real_images import ingest_real_digits

    ingest_real_digits(tmp_path / "real", "real-digits", progress=False)  # images only: no vectors until `make features`
    with pytest.raises(EmbedError, match="run real-digits has no vectors .*make features RUN=real-digits"):
        embed_run(str(tmp_path / "real"), "real-digits", progress=False)


def test_cli_prints_the_layout_table(embedded):
    result = subprocess.run([sys.executable, "-m", "store", "embed", "--lake", str(embedded["lake"]), "--quiet"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(reused)") == 3


def stored_layouts(lake) -> list[tuple]:
    """What readers see of the layouts and graphs; every shard must be readable and no temporary visible."""
    import pyarrow.parquet as pq

    for shard in lake.rglob("*.parquet"):
        pq.read_metadata(shard)
    assert not [p for p in lake.rglob("*.tmp") if not p.name.startswith(".")]
    con = connect(lake)
    layouts = con.sql("SELECT layer, params_hash, points FROM layouts ORDER BY ALL").fetchall()
    graphs = con.sql("SELECT layer, count(*) FROM neighbours GROUP BY ALL ORDER BY ALL").fetchall()
    assert con.sql("SELECT count(*) FROM map_points").fetchall()[0][0] == sum(r[2] for r in layouts)
    return layouts + graphs


def embed_cli(lake, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "store", "embed", "--lake", str(lake), "--quiet", *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("failpoint", ["before-rename:1", "while-writing:2", "after-rename:2"])
def test_killed_layout_leaves_the_previous_versions_usable(embedded, tmp_path, failpoint):
    import signal

    lake = tmp_path / "lake"
    shutil.copytree(embedded["lake"], lake)
    before = stored_layouts(lake)
    killed = embed_cli(lake, "--min-dist", "0.3", env={"DMD2_LENS_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL
    after = stored_layouts(lake)
    assert set(before) <= set(after)  # every earlier version still there, whole
    left = list(lake.rglob(".*.tmp"))
    assert bool(left) == (failpoint != "after-rename:2")  # killed before its rename, a shard stays a temporary
    assert embed_cli(lake, "--min-dist", "0.3").returncode == 0
    assert len(stored_layouts(lake)) == len(before) + len(embedded["results"])
    assert list(lake.rglob(".*.tmp")) == []  # the next embed removed what the killed one left


def test_killed_graph_build_is_rebuilt(digits_lake, tmp_path):
    import signal

    lake = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    killed = embed_cli(lake, env={"DMD2_LENS_FAILPOINT": "before-rename:1"})
    assert killed.returncode == -signal.SIGKILL
    assert stored_layouts(lake) == []  # nothing half-written became visible
    assert embed_cli(lake).returncode == 0
    assert len(stored_layouts(lake)) == 2 * 3  # a layout and a graph per captured layer


def test_layers_are_laid_out_from_one_snapshot_while_an_ingest_writes(digits_lake, tmp_path, monkeypatch):
    """A chunk committed by a concurrent ingest after the first layer was read does not reach the later
    layers: every layer holds the same samples, so each is aligned onto the one before."""
    import store.embed
    from store.lake import chunk_name

    lake = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    held = tmp_path / "held"
    late = sorted(lake.rglob(chunk_name(2)))  # chunk 2's samples shard and every vector shard
    for shard in late:
        target = held / shard.relative_to(lake)
        target.parent.mkdir(parents=True, exist_ok=True)
        shard.rename(target)
    real_build_graph = store.embed.build_graph

    def build_then_commit(*args, **kwargs):
        graph = real_build_graph(*args, **kwargs)
        for shard in held.rglob(chunk_name(2)):  # the ingest commits chunk 2: vectors first, samples last
            destination = lake / shard.relative_to(held)
            if "samples" not in shard.parts:
                shard.rename(destination)
        for shard in held.rglob(chunk_name(2)):
            shard.rename(lake / shard.relative_to(held))
        return graph

    monkeypatch.setattr(store.embed, "build_graph", build_then_commit)
    results = embed_run(str(lake), digits_lake["result"].run_id, progress=False)
    assert len(results) == 3 and {r.samples for r in results} == {256}
    assert results[0].displacement is None and all(r.displacement is not None for r in results[1:])
    assert sorted(lake.rglob(chunk_name(2))) == late  # the chunk did arrive during the embed
