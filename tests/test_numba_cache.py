"""Numba's cache folder wherever our code runs: importing `store` chooses one when NUMBA_CACHE_DIR is unset
(numba itself then reads it), keeps one that is set, and `python -m store warm-cache` fills it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO

PROBE = "import store, numba.core.config as c; print(c.CACHE_DIR)"
LAYOUT_AND_COUNT_CACHE_USE = """
import numpy as np, umap.umap_
from store.layouts import LayoutParams, layout
layout(np.random.default_rng(1).normal(size=(80, 8)).astype(np.float32), LayoutParams(pca=None))
stats = umap.umap_.smooth_knn_dist.stats
print("hits", sum(stats.cache_hits.values()), "misses", sum(stats.cache_misses.values()))
"""


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


def test_warm_cache_compiles_what_layouts_use_into_the_folder(tmp_path):
    """`warm-cache` on a copy of the suite's cache (filled by `make setup` or earlier tests; compiling all of
    it again takes ~2 min) without the kernels named here, which it must compile again."""
    cache = tmp_path / "cache"
    suite_cache = os.environ.get("NUMBA_CACHE_DIR", "")
    if os.path.isdir(suite_cache):
        shutil.copytree(suite_cache, cache)
    # UMAP compiles the first two without numba's cache, pynndescent the third (a kernel of the search that
    # places the points a sampled fit leaves out): cached only because store turns the cache on for them
    removed = {"umap_.smooth_knn_dist", "layouts._optimize_layout_euclidean_single_epoch",
               "search_graph._transpose_csr"}
    for path in list(cache.rglob("*.nb[ic]")):
        if path.name.split("-")[0] in removed:
            path.unlink()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    result = python(["-m", "store", "warm-cache"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"numba kernels cached in {cache}")
    cached = {path.name.split("-")[0] for path in cache.rglob("*.nbi")}
    assert removed <= cached and len(cached) > 40
    # a new process laying out a small run loads them instead of compiling
    used = python(["-c", LAYOUT_AND_COUNT_CACHE_USE], env)
    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == ["hits", "1", "misses", "0"]
