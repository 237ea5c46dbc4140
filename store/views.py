"""DuckDB over the lake: a connection with the views from `sql/views.sql`, for code and notebooks.

    >>> from store import connect
    >>> con = connect("lake")
    >>> con.sql("SELECT class_name, count(*) FROM samples GROUP BY 1").df()

The views read Parquet globs, so new shards show up in every query. A table that has no shards yet
gets an empty view with the same columns (DuckDB refuses a glob that matches nothing); call
`connect` again once the first shards exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
from ingest.lake import RUNS_SCHEMA, SAMPLES_SCHEMA, Lake
from store.shards import CorruptShardWarning, unreadable, warn_skipped  # noqa: F401 (CorruptShardWarning: public here too)

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
VIEWS_FILE = SQL_DIR / "views.sql"
READ_PARQUET = re.compile(r"read_parquet\('\{lake\}/(?P<table>\w+)/(?P<glob>[^']*)'[^)]*\)")

ACTIVATIONS_COLUMNS = pa.schema([
    ("run_id", pa.string()), ("sample_id", pa.int64()), ("layer", pa.string()), ("step", pa.int16()),
    ("noise_level", pa.float32()), ("pooling", pa.string()), ("vector", pa.list_(pa.float32())),
])
EMBEDDINGS_COLUMNS = pa.schema([
    ("run_id", pa.string()), ("layer", pa.string()), ("step", pa.int16()), ("pooling", pa.string()),
    ("method", pa.string()), ("params_hash", pa.string()), ("params", pa.string()), ("sample_id", pa.int64()),
    ("x", pa.float32()), ("y", pa.float32()), ("knn_overlap", pa.float32()),
])
NEIGHBOURS_COLUMNS = pa.schema([
    ("run_id", pa.string()), ("layer", pa.string()), ("step", pa.int16()), ("pooling", pa.string()),
    ("sample_id", pa.int64()), ("neighbour_ids", pa.list_(pa.int64())), ("distances", pa.list_(pa.float32())),
])
COMPARISONS_COLUMNS = pa.schema([
    ("run_a", pa.string()), ("run_b", pa.string()), ("layer", pa.string()), ("pooling", pa.string()),
    ("step_a", pa.int16()), ("step_b", pa.int16()), ("samples", pa.int64()), ("k", pa.int32()),
    ("mean_knn_jaccard", pa.float64()), ("linear_cka", pa.float64()), ("most_changed", pa.list_(pa.int64())),
    ("most_changed_jaccard", pa.list_(pa.float64())),
])
DIVERSITY_COLUMNS = pa.schema([
    ("run_id", pa.string()), ("layer", pa.string()), ("pooling", pa.string()), ("step", pa.int16()),
    ("label", pa.string()), ("samples", pa.int64()), ("measured", pa.int64()), ("mean_pairwise_distance", pa.float64()),
    ("knn_purity", pa.float64()), ("near_duplicate_pairs", pa.int64()), ("threshold", pa.float64()),
    ("vendi_score", pa.float64()), ("example_pair", pa.list_(pa.int64())),
])
SELECTIONS_COLUMNS = pa.schema([
    ("selection", pa.string()), ("run_id", pa.string()), ("layer", pa.string()), ("step", pa.int64()),
    ("sample_id", pa.int64()), ("seed", pa.int64()), ("class_id", pa.int64()), ("label", pa.string()),
    ("prompt", pa.string()), ("tags", pa.string()), ("x", pa.float32()), ("y", pa.float32()),
    ("saved_at", pa.timestamp("us", tz="UTC")),
])
TABLE_SCHEMAS = {"selections": SELECTIONS_COLUMNS, "comparisons": COMPARISONS_COLUMNS, "diversity": DIVERSITY_COLUMNS, "runs": RUNS_SCHEMA, "samples": SAMPLES_SCHEMA, "activations": ACTIVATIONS_COLUMNS,
                 "embeddings": EMBEDDINGS_COLUMNS, "indexes": NEIGHBOURS_COLUMNS}


def duckdb_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_string(arrow_type):
        return "VARCHAR"
    if pa.types.is_binary(arrow_type):
        return "BLOB"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    if pa.types.is_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type):
        return duckdb_type(arrow_type.value_type) + "[]"
    simple = {pa.int16(): "SMALLINT", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float32(): "FLOAT",
              pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}
    return simple[arrow_type]


def empty_relation(schema: pa.Schema) -> str:
    columns = ", ".join(f'NULL::{duckdb_type(f.type)} AS "{f.name}"' for f in schema)
    return f"(SELECT {columns} WHERE false)"


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def render_views(lake: Lake) -> str:
    """views.sql with the lake's root filled in, empty relations for tables without shards, and corrupt
    shards left out (with a warning naming each), so one bad file does not make a whole table unreadable."""
    root = lake.local_root()

    def substitute(match: re.Match) -> str:
        table, glob = match.group("table"), match.group("glob")
        files = sorted((root / table).glob(glob))
        if not files:
            return empty_relation(TABLE_SCHEMAS[table])
        bad = {f: why for f in files if (why := unreadable(f))}
        if not bad:  # the glob itself, so shards written later show up in the same connection
            return match.group(0).replace("'{lake}/", sql_literal(str(root) + "/")[:-1], 1)
        for path, why in bad.items():
            warn_skipped(path, why, stacklevel=4)
        good = [f for f in files if f not in bad]
        if not good:
            return empty_relation(TABLE_SCHEMAS[table])
        listed = "[" + ", ".join(sql_literal(str(f)) for f in good) + "]"
        return match.group(0).replace(f"'{{lake}}/{table}/{glob}'", listed, 1)

    return READ_PARQUET.sub(substitute, VIEWS_FILE.read_text())


def connect(lake: str | Path = "lake", threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views (read-only use; nothing is stored)."""
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute(render_views(Lake(lake)))
    return con
