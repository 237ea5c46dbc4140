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
from store.lake import TABLE_SCHEMAS, Lake
from store.shards import CorruptShardWarning, unreadable, warn_skipped  # noqa: F401 (CorruptShardWarning: public here too)

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
VIEWS_FILE = SQL_DIR / "views.sql"
READ_PARQUET = re.compile(r"read_parquet\('\{lake\}/(?P<table>\w+)/(?P<glob>[^']*)'[^)]*\)")

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
