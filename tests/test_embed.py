"""`make embed` on the embedded model's lake: layouts per layer, reuse, alignment, separation, errors."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from store import connect
from store.embed import EmbedError, embed_run
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


def test_stored_neighbour_audit_equals_a_numpy_recount(embedded):
    """knn_overlap: the share of a point's 15 cosine neighbours in the raw vectors that are among its 15 nearest
    on the map, recounted here from the stored coordinates and the vectors."""
    from store.vectors import load_matrix

    con = connect(embedded["lake"])
    result = next(r for r in embedded["results"] if r.layer == "enc.2x2_block0")
    rows = con.sql(f"SELECT sample_id, x, y, knn_overlap FROM embeddings WHERE params_hash = '{result.params_hash}' "
                   "ORDER BY sample_id").fetchall()
    ids, vectors = load_matrix(embedded["lake"], embedded["run_id"], "enc.2x2_block0", "mean", 0)
    assert [r[0] for r in rows] == ids.tolist()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    xy = np.array([r[1:3] for r in rows], dtype=np.float64)
    raw, planar = -(unit @ unit.T), ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(raw, np.inf)
    np.fill_diagonal(planar, np.inf)
    raw_k, planar_k = np.argsort(raw, axis=1)[:, :15], np.argsort(planar, axis=1)[:, :15]
    recount = np.array([len(set(a) & set(b)) / 15 for a, b in zip(raw_k, planar_k)])
    stored = np.array([r[3] for r in rows])
    assert np.mean(np.abs(stored - recount) < 1e-6) > 0.97  # equal but for float ties in a few neighbourhoods
    assert abs(stored.mean() - result.mean_overlap) < 1e-6 and 0.05 < stored.mean() < 0.99


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


def stored_xy(con, params_hash: str) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids, coordinates) of one stored layout, read from the embeddings view."""
    rows = con.sql(f"SELECT sample_id, x, y FROM embeddings WHERE params_hash = '{params_hash}' ORDER BY sample_id").fetchall()
    return np.array([r[0] for r in rows]), np.array([r[1:] for r in rows], dtype=np.float64)


def displacement(reference: np.ndarray, moved: np.ndarray) -> float:
    """Mean distance between the same points of two layouts, in units of `reference`'s RMS radius."""
    centred = reference - reference.mean(axis=0)
    return float(np.mean(np.hypot(*(reference - moved).T)) / np.sqrt(np.mean(np.sum(centred**2, axis=1))))


def test_alignment_keeps_points_closer_than_independent_layouts(embedded, tmp_path):
    lake = tmp_path / "lake"  # a copy: the shared embedded lake must keep one layout per layer
    shutil.copytree(embedded["lake"], lake)
    con = connect(lake)
    independent = {r.layer: r for r in embed_run(str(lake), layers=["dec.8x8_block1"], align=False, progress=False)}
    assert not independent["dec.8x8_block1"].reused
    aligned = {r.layer: r for r in embedded["results"]}
    ids, reference = stored_xy(con, aligned["enc.2x2_block0"].params_hash)
    aligned_ids, aligned_xy = stored_xy(con, aligned["dec.8x8_block1"].params_hash)
    free_ids, free_xy = stored_xy(con, independent["dec.8x8_block1"].params_hash)
    assert len(ids) == 300 and np.array_equal(ids, aligned_ids) and np.array_equal(ids, free_ids)
    aligned_move, free_move = displacement(reference, aligned_xy), displacement(reference, free_xy)
    assert aligned["dec.8x8_block1"].displacement == pytest.approx(aligned_move, rel=1e-4)  # reported = stored
    assert aligned_move < 0.5 * free_move  # clearly closer than a layout made without alignment
    # Stored aligned: no rotation, scale or shift of it moves it closer to its reference (it is Procrustes-fitted).
    centred_ref, centred = reference - reference.mean(0), aligned_xy - aligned_xy.mean(0)
    np.testing.assert_allclose(reference.mean(0), aligned_xy.mean(0), atol=1e-3 * np.abs(reference).max())
    u, sigma, vt = np.linalg.svd(centred.T @ centred_ref)
    np.testing.assert_allclose(u @ vt, np.eye(2), atol=1e-3)  # the best rotation onto the reference is none
    assert sigma.sum() / np.sum(centred**2) == pytest.approx(1, abs=1e-3)  # and the best scale is 1


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
