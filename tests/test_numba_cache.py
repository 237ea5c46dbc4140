"""Numba's cache folder wherever our code runs: importing `store` chooses one when NUMBA_CACHE_DIR is unset
(numba itself then reads it), keeps one that is set, and `python -m store warm-cache` fills it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = "import store, numba.core.config as c; print(c.CACHE_DIR)"


def python(code_or_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *code_or_args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_importing_store_chooses_a_cache_folder_numba_uses(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"XDG_CACHE_HOME": str(tmp_path)}
    chosen = python(["-c", PROBE], env)
    assert chosen.returncode == 0, chosen.stderr
    assert chosen.stdout.strip() == str(tmp_path / "dmd2-lens" / "numba")
    kept = python(["-c", PROBE], env | {"NUMBA_CACHE_DIR": str(tmp_path / "mine")})
    assert kept.stdout.strip() == str(tmp_path / "mine")


def test_warm_cache_fills_the_folder(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    result = python(["-m", "store", "warm-cache"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"numba kernels cached in {tmp_path / 'cache'}")
    cached = list((tmp_path / "cache").rglob("*.nbi"))
    assert len(cached) > 10  # index files of compiled UMAP / pynndescent functions
