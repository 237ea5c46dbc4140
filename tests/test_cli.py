"""The ingest command line as a user runs it: real subprocesses, exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.conftest import REPO


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ingest", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_layers_lists_imagenet_blocks_quickly_without_weights():
    start = time.perf_counter()
    result = run_cli("layers", "--model", "imagenet")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "37 layers"
    assert any(line.split() == ["enc.8x8_block2", "768", "x", "8", "x", "8"] for line in lines)
    assert elapsed < 60  # "in seconds"; generous for a loaded CI machine


def test_layers_json():
    result = run_cli("layers", "--model", "imagenet", "--json")
    layers = json.loads(result.stdout)
    assert layers[16] == {"name": "dec.8x8_in0", "shape": [768, 8, 8]}


def test_estimate_prints_breakdown():
    result = run_cli("estimate", "--model", "imagenet", "--layers", "enc.8x8_block2", "--pool", "mean",
                     "--n", "100", "--batch", "2", "--json")
    assert result.returncode == 0, result.stderr
    est = json.loads(result.stdout)
    assert est["activation_bytes"] == 768 * 4
    assert est["total_bytes"] == 100 * est["sample_bytes"]
    assert est["peak_generation_bytes"] > est["weight_bytes"] > 1e9


def test_bad_input_gives_one_error_line_and_exit_2():
    for args, expected in [
        (("layers", "--model", "nope"), "unknown model 'nope'"),
        (("estimate", "--layers", "enc.9x9_block0"), "unknown layer 'enc.9x9_block0'"),
        (("estimate", "--pool", "median"), "unknown pooling median"),
        (("estimate", "--n", "0"), "must be positive"),
    ]:
        result = run_cli(*args)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and expected in result.stderr


def test_help_does_not_import_torch():
    code = "import sys; from ingest.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.strip() == "False"


def test_explicit_sample_seeds(tmp_path):
    from store import connect

    lake = tmp_path / "lake"
    result = run_cli("run", "--lake", str(lake), "--classes", "7", "--sample-seeds", "42,43",
                     "--layers", "enc.8x8_block0", "--quiet")
    assert result.returncode == 0, result.stderr
    rows = connect(lake).sql("SELECT seed, class_id FROM samples ORDER BY sample_id").fetchall()
    assert rows == [(42, 7), (43, 7)]
    bad = run_cli("run", "--lake", str(tmp_path / "other"), "--classes", "7", "--sample-seeds", "4x")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--sample-seeds" in bad.stderr
    mismatch = run_cli("run", "--lake", str(tmp_path / "other"), "--classes", "1,2", "--sample-seeds", "1,2,3")
    assert mismatch.returncode == 2 and "3 seeds but 2" in mismatch.stderr and not (tmp_path / "other" / "samples").exists()


def test_one_plan_through_two_models_makes_paired_runs(tmp_path):
    from store import connect
    from store.compare import check_paired
    from store.lake import Lake

    lake = tmp_path / "lake"
    result = run_cli("run", "--lake", str(lake), "--model", "digits-dmd2,digits-edm", "--run-id", "student,teacher",
                     "--per-class", "2", "--layers", "enc.8x8_block0", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "make compare RUNS=student,teacher" in result.stdout
    assert check_paired(Lake(str(lake)), "student", "teacher") == 20
    models = dict(connect(lake).sql("SELECT run_id, model FROM runs").fetchall())
    assert models == {"student": "digits-dmd2", "teacher": "digits-edm"}
    bad = run_cli("run", "--lake", str(tmp_path / "other"), "--model", "digits-dmd2,nope", "--n", "4")
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr and not (tmp_path / "other" / "runs").exists()
    uneven = run_cli("run", "--lake", str(tmp_path / "other"), "--model", "digits-dmd2,digits-edm", "--run-id", "a")
    assert uneven.returncode == 2 and "as many comma-separated --run-id" in uneven.stderr
