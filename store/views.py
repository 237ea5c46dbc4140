"""DuckDB over the lake: a connection with the views from `sql/views.sql`, for code and notebooks.

    >>> from store import connect
    >>> con = connect("lake")
    >>> con.sql("SELECT class_name, count(*) FROM samples GROUP BY 1").df()

The views read Parquet globs, so new shards show up in every query. A table that has no shards yet
gets an empty view with the same columns (DuckDB refuses a glob that matches nothing), and a table with
a damaged or foreign shard is read from the list of its good shards; call `refresh(con, lake)` (or
`connect` again) to see shards written since.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
from store.lake import TABLE_SCHEMAS, Lake, as_lake
from store.shards import CorruptShardWarning  # noqa: F401 (public here too)

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


def glob_escaped(path: str) -> str:
    """A path DuckDB's file reader takes literally: it expands `*`, `?` and `[...]` even in a list of files,
    so a lake under `runs[1]/` would read `runs1/`'s files."""
    return re.sub(r"[\[\]*?]", lambda m: f"[{m.group(0)}]", path)


def render_views(lake: Lake) -> str:
    """views.sql with the lake's root filled in, empty relations for tables without shards, and shards that
    readers may not use (damaged, foreign, or links out of the lake: `store.shards`) left out with a warning
    naming each. A table whose files are all usable is read through its glob, so shards written later show
    up in the same connection; otherwise through the list of its usable shards."""
    root = lake.local_root()

    def substitute(match: re.Match) -> str:
        table, glob = match.group("table"), match.group("glob")
        usable = lake.table_shards(table)
        if not usable:
            return empty_relation(TABLE_SCHEMAS[table])
        source = f"'{{lake}}/{table}/{glob}'"
        if sorted(str(f) for f in (root / table).glob(glob)) == sorted(usable):
            return match.group(0).replace(source, sql_literal(glob_escaped(f"{root}/{table}/") + glob), 1)
        listed = "[" + ", ".join(sql_literal(glob_escaped(f)) for f in usable) + "]"
        return match.group(0).replace(source, listed, 1)

    return READ_PARQUET.sub(substitute, VIEWS_FILE.read_text())


def refresh(con: duckdb.DuckDBPyConnection, lake: str | Path | Lake) -> None:
    """Re-create a connection's views, so shards written since `connect` are checked and seen."""
    con.execute(render_views(as_lake(lake)))


def connect(lake: str | Path = "lake", threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the lake's views (read-only use; nothing is stored)."""
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute(render_views(Lake(lake)))
    return con
