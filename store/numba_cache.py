"""Numba's compiled kernels (UMAP's and pynndescent's) kept on disk wherever our code runs, so only the first
layout on a machine pays for compiling them (measured: `python -m store embed` of an 18-sample run in a new
shell, 21.8 s with an empty cache, 7.5 s with a warm one).

Importing `store` sets `NUMBA_CACHE_DIR` to `default_cache_dir()` when it is unset (before anything imports
numba, which reads it once); `make setup` runs `python -m store warm-cache` once to fill it.

    python -m store warm-cache         # compile and cache the kernels a layout uses; prints the folder
"""

from __future__ import annotations

import os
import time
from pathlib import Path

VARIABLE = "NUMBA_CACHE_DIR"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/dmd2-lens/numba` (default `~/.cache/dmd2-lens/numba`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dmd2-lens" / "numba"


def use_default_cache() -> str:
    """Set `NUMBA_CACHE_DIR` to the default folder unless it is set already; returns the folder in use."""
    return os.environ.setdefault(VARIABLE, str(default_cache_dir()))


def warm() -> float:
    """Run what `make embed` runs on a small layer (exact neighbours, an aligned UMAP layout, the neighbour
    audit) on random vectors, so its kernels are compiled into the cache; returns the seconds it took."""
    import numpy as np

    from store.embed import AUDIT_K
    from store.layouts import LayoutParams, layout, neighbour_overlap
    from store.neighbours import GRAPH_K, exact_knn, normalise

    started = time.perf_counter()
    vectors = np.random.default_rng(0).normal(size=(GRAPH_K + 30, 16)).astype(np.float32)
    rows, distances = exact_knn(normalise(vectors), GRAPH_K)
    first = layout(vectors, LayoutParams(), knn=(rows, distances))
    aligned = layout(vectors, LayoutParams(), knn=(rows, distances), init=first)
    neighbour_overlap(rows, aligned, AUDIT_K)
    return time.perf_counter() - started

