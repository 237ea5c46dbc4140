"""`python -m store sql` (what `make sql Q=...` runs) against a real lake."""

from __future__ import annotations

import subprocess
import sys

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


def test_shell_loads_the_views(digits_lake):
    # Without a query, `python -m store sql` replaces itself with the duckdb-cli shell, views loaded.
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
    assert bad.returncode == 2 and "must be a step number or `all`" in bad.stderr
