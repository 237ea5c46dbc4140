"""Numba's compiled kernels (UMAP's and pynndescent's) kept on disk wherever our code runs, so only the first
layout on a machine pays for compiling them (measured: `python -m store embed` of an 18-sample run in a new
shell, 21-26 s with an empty cache, 3.0-3.3 s after `warm-cache`; docs/BENCHMARKS.md).

Importing `store` sets `NUMBA_CACHE_DIR` to `default_cache_dir()` when it is unset (before anything imports
numba, which reads it once); `make setup` runs `python -m store warm-cache` (`store.embed.warm_kernels`) once
to fill it. Most of UMAP's and pynndescent's kernels are compiled without numba's `cache=True`, so
`cache_library_kernels()` turns the disk cache on for them where we import those libraries.

    python -m store warm-cache         # compile and cache the kernels layouts use (~2 min); prints the folder
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

VARIABLE = "NUMBA_CACHE_DIR"
LIBRARIES = ("umap", "pynndescent")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/dmd2-lens/numba` (default `~/.cache/dmd2-lens/numba`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dmd2-lens" / "numba"


def use_default_cache() -> str:
    """Set `NUMBA_CACHE_DIR` to the default folder unless it is set already; returns the folder in use."""
    return os.environ.setdefault(VARIABLE, str(default_cache_dir()))


def cache_library_kernels() -> None:
    """Turn numba's disk cache on for every compiled function of UMAP and pynndescent imported so far that
    was left without one (call after importing them, before their first use). A few take other compiled
    functions as arguments and cannot be cached (numba warns "Cannot cache compiled function"); those
    still compile in each process, and that warning is silenced."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher
    from numba.core.errors import NumbaWarning

    warnings.filterwarnings("ignore", message="Cannot cache compiled function", category=NumbaWarning)
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in LIBRARIES:
            continue
        for value in list(vars(module).values()):
            if (isinstance(value, Dispatcher) and value.py_func.__module__ == name
                    and isinstance(value._cache, NullCache)):
                value.enable_caching()
