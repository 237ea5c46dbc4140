"""`python -m store sql` (what `make sql Q=...` runs) against a real lake, and the SQL prompt that `make sql`
opens (`store/sql_shell.py`, on the same duckdb module): the views and every example query."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from store.cli import main
from tests.conftest import REPO


def store_sql(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "store", "sql", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_query_prints_a_table(digits_lake):
    result = store_sql("--lake", str(digits_lake["lake"]), "SELECT count(*) AS n FROM samples")
    assert result.returncode == 0, result.stderr
    assert "300" in result.stdout


def test_errors_are_one_line(digits_lake, tmp_path):
    bad = store_sql("--lake", str(digits_lake["lake"]), "SELEC 1")
    assert bad.returncode == 2 and bad.stderr.startswith("error: SQL error") and bad.stderr.count("\n") == 1
    missing = store_sql("--lake", str(tmp_path / "none"), "SELECT 1")
    assert missing.returncode == 2 and "no lake at" in missing.stderr


def test_a_skipped_shard_is_one_warning_line(digits_lake, tmp_path):
    lake = tmp_path / "lake"
    shutil.copytree(digits_lake["lake"], lake)
    damaged = next((lake / "samples").rglob("chunk-000002.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:200])
    result = store_sql("--lake", str(lake), "SELECT count(*) AS n FROM samples")
    assert result.returncode == 0 and "256" in result.stdout
    assert result.stderr.splitlines() == [f"warning: skipping shard {damaged} (damaged: "
                                          + result.stderr.split("(damaged: ", 1)[1].rstrip("\n")]
    assert "delete it and repeat the command" in result.stderr


def test_shell_loads_the_views(digits_lake):
    # Without a query, `python -m store sql` reads statements (here from a pipe), views loaded.
    result = subprocess.run([sys.executable, "-m", "store", "sql", "--lake", str(digits_lake["lake"])], cwd=REPO,
                            input="SELECT count(*) AS stored FROM points;\n", capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "stored" in result.stdout and "300" in result.stdout


def test_embed_every_step_of_a_multi_step_run(paired_lake, tmp_path):
    import shutil

    from store import catalogue
    from tests.conftest import DIGITS_LAYERS

    lake = tmp_path / "lake"
    shutil.copytree(paired_lake["lake"], lake)
    layer = DIGITS_LAYERS.split(",")[-1]
    result = subprocess.run([sys.executable, "-m", "store", "embed", "--lake", str(lake), "--run",
                             paired_lake["teacher"], "--layers", layer, "--step", "all", "--quiet"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    steps = {k.step for k in catalogue.list_layouts(lake) if k.run_id == paired_lake["teacher"] and k.layer == layer}
    assert steps == set(range(8))  # the teacher samples in 8 steps
    bad = subprocess.run([sys.executable, "-m", "store", "embed", "--lake", str(lake), "--step", "last"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("error: --step 'last' is not a whole number or `all`; give one from 0 to 32,767")


def test_duckdb_is_pinned_to_one_tested_range():
    """One DuckDB: the module, pinned to one range in pyproject.toml that holds the installed version (the
    SQL prompt runs on it too; no separate duckdb-cli, which PyPI does not have for DuckDB 2.x)."""
    import tomllib

    import duckdb
    from packaging.requirements import Requirement

    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {r.name: r.specifier for r in map(Requirement, dependencies)}
    assert "duckdb-cli" not in pins
    assert str(pins["duckdb"]).count("<") == 1 and pins["duckdb"].contains(duckdb.__version__)


def test_the_prompt_runs_every_example_and_stops_at_an_error(digits_lake):
    from store.views import connect

    lake = str(digits_lake["lake"])
    script = ".tables\n.read sql/examples.sql\nSELECT count(*)\n  AS stored FROM points;\n.quit\nSELECT 'after quit';\n"
    result = subprocess.run([sys.executable, "-m", "store", "sql", "--lake", lake], cwd=REPO, input=script,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.splitlines()[0].split() == sorted(result.stdout.splitlines()[0].split())  # .tables
    assert {"samples", "latest_runs", "runs", "activations"} <= set(result.stdout.splitlines()[0].split())
    con = connect(lake)
    for statement in con.extract_statements((REPO / "sql" / "examples.sql").read_text()):
        first_column = con.sql(statement.query).columns[0]
        assert first_column in result.stdout, statement.query
    assert "stored" in result.stdout and "300" in result.stdout and "after quit" not in result.stdout
    failing = subprocess.run([sys.executable, "-m", "store", "sql", "--lake", lake], cwd=REPO,
                             input="SELECT nope FROM samples;\nSELECT 'not reached';\n", capture_output=True,
                             text=True, timeout=120)
    assert failing.returncode == 1 and failing.stderr.startswith("error: Binder Error")
    assert failing.stderr.count("\n") == 1 and "not reached" not in failing.stdout


def lake_files(lake: Path) -> list[tuple[str, int]]:
    """Every file and folder under a lake, with sizes: what "nothing was written" compares."""
    return sorted((str(p.relative_to(lake)), p.stat().st_size if p.is_file() else -1) for p in lake.rglob("*"))


HUGE = "99999999999999999999999"  # beyond 64 bits
LAYER = "enc.8x8_block0"
BAD_OPTIONS = [  # (subcommand and arguments, the option the one line must name); {run} is the lake's run
    (["neighbours", "--layer", LAYER, "--sample", HUGE], "--sample"),
    (["neighbours", "--layer", LAYER, "--sample", "-1"], "--sample"),
    (["neighbours", "--layer", LAYER, "--sample", "0", "--k", HUGE], "--k"),
    (["neighbours", "--layer", LAYER, "--sample", "0", "--k", "0"], "--k"),
    (["neighbours", "--layer", LAYER, "--sample", "0", "--step", "32768"], "--step"),
    (["embed", "--step", HUGE], "--step"),
    (["embed", "--step", "-1"], "--step"),
    (["embed", "--seed", str(2**32)], "--seed"),
    (["embed", "--n-neighbors", "1"], "--n-neighbors"),
    (["embed", "--pca", "-1"], "--pca"),
    (["embed", "--fit-sample", "3"], "--fit-sample"),
    (["compare", "--runs", "{run},{run}", "--k", HUGE], "--k"),
    (["compare", "--runs", "{run},{run}", "--k", "0"], "--k"),
    (["compare", "--runs", "{run},{run}", "--steps", f"0,{HUGE}"], "--steps"),
    (["compare", "--runs", "{run},{run}", "--steps", "0"], "--steps"),
    (["atlas", "--run", "{run}", "--layer", LAYER, "--k", str(2**31)], "--k"),
    (["atlas", "--run", "{run}", "--layer", LAYER, "--step", HUGE], "--step"),
    (["diversity", "--run", "{run}", "--step", HUGE], "--step"),
    (["sql", "--max-rows", HUGE, "SELECT 1"], "--max-rows"),
    (["sql", "--max-rows", "0", "SELECT 1"], "--max-rows"),
]


@pytest.mark.parametrize("args, option", BAD_OPTIONS, ids=[" ".join(a)[:48] for a, _ in BAD_OPTIONS])
def test_bad_numbers_write_nothing(embedded_lake, tmp_path, capsys, args, option):
    lake = tmp_path / "lake"
    shutil.copytree(embedded_lake["lake"], lake)  # a lake with a run, graphs and layouts
    before = lake_files(lake)
    out_file = tmp_path / "atlas.parquet"
    argv = [a.replace("{run}", embedded_lake["run_id"]) for a in args]
    code = main([argv[0], "--lake", str(lake), *(["--out", str(out_file)] if argv[0] == "atlas" else []), *argv[1:]])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], err
    assert lake_files(lake) == before and not out_file.exists()
