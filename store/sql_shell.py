"""`make sql` without a query: an SQL prompt on the lake's views, run by the same `duckdb` module as the rest
of the code, so there is one DuckDB version to pin and test (PyPI has no duckdb-cli shell for DuckDB 2.x).

    lake> SELECT class_name, count(*) FROM samples GROUP BY 1;
    lake> .tables          the views          .read FILE   run a file's statements
    lake> .help            this list          .quit        leave (or Ctrl-D)

A statement runs once a line ends with `;`. Piped input (`python -m store sql < queries.sql`) runs the same
way without prompts and exits 1 after the first failing statement, like `duckdb -bail`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, TextIO

import duckdb

HELP = (".tables  list the views    .read FILE  run the statements of FILE\n"
        ".help    this list         .quit       leave (or Ctrl-D)\n"
        "End a statement with ';'. The views are described in docs/ARCHITECTURE.md; examples: sql/examples.sql")


class ShellError(Exception):
    """A statement or command failed (its one-line reason)."""


def line_reader(stdin: TextIO, interactive: bool) -> Callable[[bool], str | None]:
    """`read(continuing)`: the next line (None at the end): prompted, with readline's editing and history,
    on a terminal; read plainly from a pipe or file."""
    if interactive:
        import readline  # noqa: F401 (gives input() line editing and history)

        def prompted(continuing: bool) -> str | None:
            try:
                return input("   ...> " if continuing else "lake> ")
            except EOFError:
                print()
                return None
        return prompted
    lines = iter(stdin)

    def plain(continuing: bool) -> str | None:
        line = next(lines, None)
        return None if line is None else line.rstrip("\n")
    return plain


def run_statements(con: duckdb.DuckDBPyConnection, text: str, max_rows: int, out: TextIO) -> None:
    try:
        statements = con.extract_statements(text)
    except duckdb.Error as err:
        raise ShellError(str(err).splitlines()[0]) from None
    for statement in statements:
        try:
            relation = con.sql(statement.query)
        except duckdb.Error as err:
            raise ShellError(str(err).splitlines()[0]) from None
        if relation is not None:
            out.write(str(relation.limit(max_rows)) if max_rows else str(relation))
            out.flush()


def run_command(con: duckdb.DuckDBPyConnection, line: str, max_rows: int, out: TextIO) -> bool:
    """Run a dot command; False when it asks to leave."""
    command, _, argument = line.strip().partition(" ")
    if command in (".quit", ".exit"):
        return False
    if command == ".tables":
        names = [row[0] for row in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
        out.write("  ".join(names) + "\n")
    elif command == ".help":
        out.write(HELP + "\n")
    elif command == ".read":
        path = Path(argument.strip())
        if not path.is_file():
            raise ShellError(f".read: no file {argument.strip()!r}")
        run_statements(con, path.read_text(), max_rows, out)
    else:
        raise ShellError(f"unknown command {command!r}; type .help")
    return True


def run_shell(con: duckdb.DuckDBPyConnection, lake: str, max_rows: int = 100, stdin: TextIO = sys.stdin,
              out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Read statements and dot commands until `.quit` or the end of input; returns the exit status."""
    interactive = stdin.isatty()
    if interactive:
        out.write(f"DuckDB {duckdb.__version__} on lake {lake}. {HELP}\n")
    read = line_reader(stdin, interactive)
    buffer: list[str] = []
    while (line := read(bool(buffer))) is not None:
        try:
            if not buffer and line.strip().startswith("."):
                if not run_command(con, line, max_rows, out):
                    return 0
            elif line.strip():
                buffer.append(line)
                if line.rstrip().endswith(";"):
                    text, buffer = "\n".join(buffer), []
                    run_statements(con, text, max_rows, out)
        except ShellError as failure:
            err.write(f"error: {failure}\n")
            if not interactive:
                return 1
    return 0
