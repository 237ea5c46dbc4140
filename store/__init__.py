"""Store: DuckDB views over the lake (from `sql/`), layouts, neighbour indexes and metrics."""

from store.views import connect

__all__ = ["connect"]
