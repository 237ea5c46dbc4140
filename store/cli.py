"""`python -m store ...`: ad hoc SQL over the lake.

    python -m store sql --lake lake "SELECT class_name, count(*) FROM samples GROUP BY 1"
    python -m store sql --lake lake            # interactive DuckDB shell with the views loaded
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m store", description="Query the lake.")
    commands = parser.add_subparsers(dest="command", required=True)
    sql = commands.add_parser("sql", help="run one query, or open a DuckDB shell with the views")
    sql.add_argument("query", nargs="?", help="SQL to run; omit it for an interactive shell")
    sql.add_argument("--lake", default="lake", help="lake folder (default: ./lake)")
    sql.add_argument("--max-rows", type=int, default=100, help="rows to print")
    sql.set_defaults(run=run_sql)
    return parser


def run_sql(args: argparse.Namespace) -> int:
    import duckdb

    from ingest.lake import Lake
    from store.views import connect, render_views

    if not Path(args.lake).is_dir():
        raise ValueError(f"no lake at {args.lake}; run `make ingest` first or pass --lake")
    if args.query:
        con = connect(args.lake)
        try:
            relation = con.sql(args.query)
        except duckdb.Error as err:
            raise ValueError(f"SQL error: {str(err).splitlines()[0]}") from None
        if relation is not None:
            relation.show(max_rows=args.max_rows, max_width=200)
        return 0
    shell = shutil.which("duckdb") or str(Path(sys.executable).parent / "duckdb")
    if not Path(shell).exists():
        raise ValueError("no duckdb shell found; install it with `pip install duckdb-cli` (make setup does)")
    init = Path(tempfile.mkdtemp()) / "views.sql"
    init.write_text(render_views(Lake(args.lake)))
    os.execv(shell, [shell, "-init", str(init)])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
