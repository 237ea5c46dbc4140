"""Ingest runs end to end in real processes: resume after SIGKILL, refusals, and two torchrun workers."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from store.lake import Lake
from ingest.run import IngestConfig, RunLock, run_ingest
from store import connect
from store.vectors import load_matrix
from tests.conftest import REPO

N = 120
ARGS = ["--n", str(N), "--layers", "enc.8x8_block0,dec.2x2_in0", "--pool", "mean,grid2", "--batch", "16",
        "--chunk-size", "32", "--seed", "3", "--quiet"]


def ingest(lake: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ingest", "run", "--lake", str(lake), *ARGS, *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def vector_digests(lake: Path) -> dict[tuple[str, str, int, int], str]:
    """(layer, pooling, step, sample_id) -> sha256 of the stored float32 vector, read from every activations
    shard with pyarrow (not through the views or store.vectors); a key stored twice fails."""
    digests: dict[tuple[str, str, int, int], str] = {}
    for shard in sorted((lake / "activations").rglob("chunk-*.parquet")):
        table = pq.read_table(shard, columns=["layer", "pooling", "step", "sample_id", "vector"])
        vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False)).astype(np.float32)
        keys = zip(*(table.column(c).to_pylist() for c in ("layer", "pooling", "step", "sample_id")))
        for key, vector in zip(keys, vectors):
            assert key not in digests, f"{key} is stored twice"
            digests[key] = hashlib.sha256(np.ascontiguousarray(vector).tobytes()).hexdigest()
    return digests


def image_digests(lake: Path) -> dict[int, str]:
    """sample_id -> sha256 of the stored PNG, read with pyarrow from every samples shard."""
    digests: dict[int, str] = {}
    for shard in sorted((lake / "samples").rglob("chunk-*.parquet")):
        table = pq.read_table(shard, columns=["sample_id", "image_png"])
        for sample_id, png in zip(table.column("sample_id").to_pylist(), table.column("image_png").to_pylist()):
            assert sample_id not in digests, f"sample {sample_id} is stored twice"
            digests[sample_id] = hashlib.sha256(png).hexdigest()
    return digests


def lake_contents(lake: Path) -> dict:
    """What a reader sees, checked for exactness: every shard readable, no duplicates, no temporaries; every
    stored vector and image by its hash."""
    for shard in lake.rglob("*.parquet"):
        pq.read_metadata(shard)
    visible_temporaries = [p for p in lake.rglob("*") if p.is_file() and p.name.endswith(".tmp") and not p.name.startswith(".")]
    assert not visible_temporaries
    con = connect(lake)
    samples = con.sql("SELECT sample_id, seed, class_id FROM samples ORDER BY sample_id").fetchall()
    activations = con.sql("SELECT layer, pooling, count(*), count(DISTINCT sample_id) "
                          "FROM activations GROUP BY ALL ORDER BY ALL").fetchall()
    status = con.sql("SELECT status FROM runs").fetchall()
    return {"samples": samples, "activations": activations, "status": status,
            "vectors": vector_digests(lake), "images": image_digests(lake)}


def run_id_of(lake: Path) -> str:
    return connect(lake).sql("SELECT DISTINCT run_id FROM runs").fetchall()[0][0]


def assert_same_contents(got: dict, reference: dict) -> None:
    """Every table equal to the uninterrupted reference run; vectors and images compared hash by hash."""
    assert got["vectors"].keys() == reference["vectors"].keys()
    differing = sorted(key for key, digest in got["vectors"].items() if reference["vectors"][key] != digest)
    assert not differing, f"{len(differing)} vectors differ from the uninterrupted run, e.g. {differing[:3]}"
    assert got["images"] == reference["images"]
    assert got == reference


@pytest.fixture(scope="module")
def clean_lake(tmp_path_factory) -> Path:
    lake = tmp_path_factory.mktemp("clean")
    result = ingest(lake)
    assert result.returncode == 0, result.stderr
    return lake


@pytest.fixture(scope="module")
def clean_run(clean_lake) -> dict:
    return lake_contents(clean_lake)


def test_clean_run_is_exact(clean_run):
    assert [s[0] for s in clean_run["samples"]] == list(range(N))
    pairs = [(layer, pool) for layer in ("dec.2x2_in0", "enc.8x8_block0") for pool in ("grid2", "mean")]
    assert clean_run["activations"] == [(layer, pool, N, N) for layer, pool in pairs]
    assert clean_run["status"] == [("complete",)]
    assert sorted(clean_run["images"]) == list(range(N)) and len(set(clean_run["images"].values())) == N
    for layer, pool in pairs:  # one vector per sample, and no two samples stored with the same vector
        mine = [digest for (lyr, pl, _, _), digest in clean_run["vectors"].items() if (lyr, pl) == (layer, pool)]
        assert len(mine) == N and len(set(mine)) == N


# Shard renames in a run of this plan: 1 "running" event, then per chunk (4) 2 layers x 2 poolings of
# activations + 1 samples shard (20), then the "complete" event (22nd): killing after it is "between runs".
KILL_POINTS = ["after-batch:1", "after-batch:3", "while-writing:4", "while-writing:13", "before-rename:2",
               "before-rename:6", "after-rename:5", "after-rename:22"]


@pytest.mark.parametrize("failpoint", KILL_POINTS)
def test_sigkill_then_rerun_gives_exactly_the_planned_samples(tmp_path, clean_run, failpoint):
    killed = ingest(tmp_path, env={"DMD2_LENS_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL
    lake_contents(tmp_path)  # readable as it is: every shard, no visible temporaries
    partial = connect(tmp_path).sql("SELECT count(*) FROM samples").fetchall()[0][0]
    resumed = ingest(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    if partial < N:
        assert f"generated {N - partial} samples" in resumed.stdout
    else:  # killed between runs: the run was complete
        assert failpoint == "after-rename:22" and "already complete" in resumed.stdout
    assert_same_contents(lake_contents(tmp_path), clean_run)  # same ids, seeds, classes, images and vectors


def test_rerunning_a_complete_run_generates_nothing(tmp_path):
    assert ingest(tmp_path).returncode == 0
    again = ingest(tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_another_configuration_under_the_same_run_id_is_refused(tmp_path):
    assert ingest(tmp_path, "--run-id", "mine").returncode == 0
    other = ingest(tmp_path, "--run-id", "mine", "--seed", "4")
    assert other.returncode == 2
    assert "run id mine already holds a run with another configuration" in other.stderr
    assert other.stderr.count("\n") == 1
    assert connect(tmp_path).sql("SELECT count(*) FROM samples").fetchall()[0] == (N,)


def test_a_second_process_on_the_same_run_refuses(tmp_path):
    with RunLock(Lake(tmp_path), "busy", rank=0):
        second = ingest(tmp_path, "--run-id", "busy")
    assert second.returncode == 2 and "being written by another process" in second.stderr
    assert not (tmp_path / "samples").exists()


def test_two_torchrun_workers_split_the_plan_exactly(tmp_path, clean_lake, clean_run):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
               "-m", "ingest", "run", "--lake", str(tmp_path), "--num-samples", *ARGS[1:]]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "worker 1/2" in result.stdout and "worker 2/2" in result.stdout
    got = lake_contents(tmp_path)
    assert got["images"] == clean_run["images"] and got["vectors"].keys() == clean_run["vectors"].keys()
    # torchrun starts workers with OMP_NUM_THREADS=1, so CPU reductions sum in another order: a few vectors may
    # differ in the last kept bit, never more
    for layer, pooling in {(key[0], key[1]) for key in got["vectors"]}:
        got_ids, got_vectors = load_matrix(tmp_path, run_id_of(tmp_path), layer, pooling)
        ref_ids, ref_vectors = load_matrix(clean_lake, run_id_of(clean_lake), layer, pooling)
        assert np.array_equal(got_ids, ref_ids) and np.array_equal(got_ids, np.arange(N))
        np.testing.assert_allclose(got_vectors, ref_vectors, rtol=2**-9, atol=1e-6)
    assert {k: v for k, v in got.items() if k != "vectors"} == {k: v for k, v in clean_run.items() if k != "vectors"}
    ranks = connect(tmp_path).sql("SELECT DISTINCT rank, world_size FROM run_events ORDER BY 1").fetchall()
    assert ranks == [(0, 2), (1, 2)]


def test_in_process_api_and_bad_options(tmp_path):
    with pytest.raises(ValueError, match="not in the hub cache"):  # tests run offline with an empty cache
        run_ingest(IngestConfig(model="imagenet", lake=str(tmp_path), n=1, progress=False))
    with pytest.raises(ValueError, match="no CUDA device"):
        run_ingest(IngestConfig(lake=str(tmp_path), n=1, device="cuda", progress=False))
    with pytest.raises(ValueError, match="--classes 12 is out of range"):
        run_ingest(IngestConfig(lake=str(tmp_path), n=1, classes=[12], progress=False))
    with pytest.raises(ValueError, match="is class-conditional"):
        run_ingest(IngestConfig(lake=str(tmp_path), prompts=str(tmp_path / "p.txt"), progress=False))
    assert not (tmp_path / "samples").exists()


def test_a_full_disk_fails_cleanly_and_the_run_resumes(tmp_path, clean_run):
    full = ingest(tmp_path, env={"DMD2_LENS_FAILPOINT": "while-writing:4:enospc"})
    assert full.returncode == 2 and full.stderr.count("\n") == 1
    assert "no space left on the lake's disk" in full.stderr and "repeat the same command" in full.stderr
    assert not [p for p in tmp_path.rglob("*.tmp")]  # the half-written temporary was removed
    lake_contents(tmp_path)  # and what is there reads cleanly
    resumed = ingest(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_contents(lake_contents(tmp_path), clean_run)


@pytest.mark.parametrize("change, message", [
    (dict(poolings=("nope",)), "unknown --pool nope"),
    (dict(workers=0), r"--workers 0 is out of range \(1 to 1,024\); give at least 1"),
    (dict(batch=0), "--batch 0 is out of range"),
    (dict(chunk_size=10**9), "--chunk-size 1000000000 is out of range"),
    (dict(seed=-1), "--seed -1 is out of range"),
    (dict(seed=2**64), r"--seed 18446744073709551616 is out of range \(0 to 2\*\*63-1\)"),
    (dict(n=10**9), "--n 1000000000 is out of range"),
    (dict(layers="no.such.layer"), "no.such.layer"),
    (dict(dtype="fp8"), "unknown --dtype"),
])
def test_bad_options_write_nothing(tmp_path, change, message):
    """Validation happens before anything reaches the lake: no `failed` run is left for `make embed`."""
    import dataclasses

    from ingest.run import IngestConfig, run_ingest

    lake = tmp_path / "lake"
    config = dataclasses.replace(IngestConfig(lake=str(lake), n=8, progress=False), **change)
    with pytest.raises(ValueError, match=message):
        run_ingest(config)
    assert not lake.exists() or not list(lake.rglob("*.parquet"))


def test_a_checkpoint_of_another_architecture_writes_nothing(tmp_path, tiny_edm_dir):
    from ingest.checkpoints import CheckpointError
    from ingest.run import IngestConfig, run_ingest

    lake = tmp_path / "lake"
    with pytest.raises(CheckpointError):
        run_ingest(IngestConfig(lake=str(lake), n=8, progress=False, checkpoint=str(tiny_edm_dir / "pytorch_model.bin")))
    assert not lake.exists() or not list(lake.rglob("*.parquet"))
