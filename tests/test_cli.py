"""The ingest command line as a user runs it: real subprocesses, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.cli import main
from store.options import MAX_SAMPLES
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
        (("estimate", "--n", "0"), "--n 0 is out of range (1 to 100,000,000); give at least 1"),
        (("estimate", "--n", "1" * 5000), "is out of range"),
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


def lake_files(lake: Path) -> list[tuple[str, int]]:
    """Every file and folder under a lake, with sizes: what "nothing was written" compares."""
    return sorted((str(p.relative_to(lake)), p.stat().st_size if p.is_file() else -1) for p in lake.rglob("*"))


@pytest.fixture()
def used_lake(tmp_path, digits_lake) -> Path:
    """A copy of a lake that already holds a run, so that "unchanged" means something."""
    lake = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    return lake


LONG_LINE = "x" * 4001
BAD_RUNS = [  # (arguments after `run --lake LAKE`, the option the one line must name)
    (["--n", "99999999999999999999999"], "--n"),
    (["--n", "-1"], "--n"),
    (["--n", str(MAX_SAMPLES + 1)], "--n"),
    (["--num-samples", "0"], "--num-samples"),
    (["--n", "ten"], "--n"),
    (["--per-class", "0"], "--per-class"),
    (["--per-class", str(MAX_SAMPLES)], "--per-class"),  # x 10 classes: over a run's limit, found by the plan
    (["--n", "4", "--per-prompt", "0"], "--per-prompt"),
    (["--n", "4", "--seed", "99999999999999999999999"], "--seed"),
    (["--n", "4", "--seed", str(2**63)], "--seed"),
    (["--n", "4", "--seed", "-1"], "--seed"),
    (["--classes", "7", "--sample-seeds", "42,99999999999999999999999"], "--sample-seeds"),
    (["--classes", "7", "--sample-seeds", "-5"], "--sample-seeds"),
    (["--classes", "12", "--n", "4"], "--classes"),  # beyond the model's 10 classes, found by the plan
    (["--classes", "99999999999999999999999", "--n", "4"], "--classes"),
    (["--n", "4", "--batch", "0"], "--batch"),
    (["--n", "4", "--chunk-size", "0"], "--chunk-size"),
    (["--n", "4", "--workers", "0"], "--workers"),
    (["--n", "4", "--workers", "99999999999999999999999"], "--workers"),
    (["--classes", "7", "--sample-seeds", "1", "--prompts", "{long}"], "long.txt:2"),
]


@pytest.mark.parametrize("args, option", BAD_RUNS, ids=[" ".join(a)[:40] for a, _ in BAD_RUNS])
def test_bad_numbers_and_prompts_write_nothing(used_lake, tmp_path, capsys, args, option):
    long = tmp_path / "long.txt"
    long.write_text(f"a cat\n{LONG_LINE}\n")
    before = lake_files(used_lake)
    code = main(["run", "--lake", str(used_lake), "--quiet", *[a.replace("{long}", str(long)) for a in args]])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], err
    assert lake_files(used_lake) == before


def test_an_over_long_prompt_for_a_text_model_writes_nothing(used_lake, tmp_path, bases, capsys):
    long = tmp_path / "long.txt"
    long.write_text(f"a cat\n{LONG_LINE}\n")
    before = lake_files(used_lake)
    code = main(["run", "--lake", str(used_lake), "--model", "sdxl-1step", "--base", str(bases["sdxl"]),
                 "--checkpoint", str(bases["sdxl_bin"]), "--prompts", str(long), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"error: {long}:2: prompt of 4,001 characters, longer than the limit of 4,000; "
                                 "shorten it (CLIP reads only its first 77 tokens, about 300 characters)\n")
    assert lake_files(used_lake) == before


def test_bad_numbers_in_estimate(capsys):
    for args in (["--n", "0"], ["--batch", "99999999999999999999999"], ["--batch", "-3"]):
        assert main(["estimate", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {args[0]} {args[1]} is out of range")


def test_help_still_answers(capsys):
    assert main(["run", "--help"]) == 0
    assert "--sample-seeds" in capsys.readouterr().out
