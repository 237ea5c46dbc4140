"""Store: DuckDB views over the lake (from `sql/`), layouts, neighbour indexes and metrics."""
