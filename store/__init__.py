"""Store: DuckDB views over the lake (from `sql/`), layouts, neighbour indexes and metrics."""

from store.numba_cache import use_default_cache

use_default_cache()  # before anything imports numba (UMAP, pynndescent): compiled kernels stay on disk

from store.views import connect  # noqa: E402 (after the cache folder is chosen)

__all__ = ["connect"]
