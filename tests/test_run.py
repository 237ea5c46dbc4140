"""Ingest runs end to end in real processes: resume after SIGKILL, refusals, and two torchrun workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from store.lake import Lake
from ingest.run import IngestConfig, RunLock, run_ingest
from store import connect
from tests.conftest import REPO

N = 120
ARGS = ["--n", str(N), "--layers", "enc.8x8_block0,dec.2x2_in0", "--pool", "mean,grid2", "--batch", "16",
        "--chunk-size", "32", "--seed", "3", "--quiet"]


def ingest(lake: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ingest", "run", "--lake", str(lake), *ARGS, *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def lake_contents(lake: Path) -> dict:
    """What a reader sees, checked for exactness: every shard readable, no duplicates, no temporaries."""
    for shard in lake.rglob("*.parquet"):
        pq.read_metadata(shard)
    visible_temporaries = [p for p in lake.rglob("*") if p.is_file() and p.name.endswith(".tmp") and not p.name.startswith(".")]
    assert not visible_temporaries
    con = connect(lake)
    samples = con.sql("SELECT sample_id, seed, class_id, md5(image_png) FROM samples ORDER BY sample_id").fetchall()
    activations = con.sql("SELECT layer, pooling, count(*), count(DISTINCT sample_id), sum(sample_id) "
                          "FROM activations GROUP BY ALL ORDER BY ALL").fetchall()
    status = con.sql("SELECT status FROM runs").fetchall()
    return {"samples": samples, "activations": activations, "status": status}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> dict:
    lake = tmp_path_factory.mktemp("clean")
    result = ingest(lake)
    assert result.returncode == 0, result.stderr
    return lake_contents(lake)


def test_clean_run_is_exact(clean_run):
    assert [s[0] for s in clean_run["samples"]] == list(range(N))
    assert clean_run["activations"] == [(layer, pool, N, N, N * (N - 1) // 2)
                                        for layer in ("dec.2x2_in0", "enc.8x8_block0") for pool in ("grid2", "mean")]
    assert clean_run["status"] == [("complete",)]


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
    assert lake_contents(tmp_path) == clean_run  # same ids, seeds, classes and identical images


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


def test_two_torchrun_workers_split_the_plan_exactly(tmp_path, clean_run):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
               "-m", "ingest", "run", "--lake", str(tmp_path), "--num-samples", *ARGS[1:]]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "worker 1/2" in result.stdout and "worker 2/2" in result.stdout
    assert lake_contents(tmp_path) == clean_run
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
    assert lake_contents(tmp_path) == clean_run


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
