"""The SQL prompt of `make sql` (store/sql_shell.py), in-process on the digits lake: statements across lines,
several on a line, dot commands, and what a failure does."""

from __future__ import annotations

import io

from store.sql_shell import run_shell
from store.views import connect


def shell(lake, text: str, max_rows: int = 100) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_shell(connect(lake), str(lake), max_rows, stdin=io.StringIO(text), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_statements_run_when_a_line_ends_with_a_semicolon(digits_lake):
    status, out, err = shell(digits_lake["lake"], "SELECT count(*)\n AS stored\n FROM samples;\nSELECT 41 + 1 AS x; SELECT 'y' AS z;\n")
    assert status == 0 and err == ""
    assert "stored" in out and "300" in out and "42" in out and out.index("42") < out.index("│ y")


def test_rows_are_limited_and_dot_commands_work(digits_lake, tmp_path):
    queries = tmp_path / "q.sql"
    queries.write_text("SELECT sample_id FROM points ORDER BY sample_id;")
    status, out, err = shell(digits_lake["lake"], f".help\n.read {queries}\n.tables\n", max_rows=3)
    assert status == 0 and err == ""
    assert ".quit" in out and "samples" in out
    assert "│         2 │" in out and "│         3 │" not in out  # ids 0, 1, 2 only


def test_a_failure_is_one_line_and_stops_piped_input(digits_lake):
    for text, reason in (("SELECT nope FROM samples;\nSELECT 'reached';\n", "Binder Error"),
                         (".frobnicate\nSELECT 'reached';\n", "unknown command '.frobnicate'"),
                         (".read /no/such.sql\nSELECT 'reached';\n", "no file")):
        status, out, err = shell(digits_lake["lake"], text)
        assert status == 1 and err.count("\n") == 1 and reason in err and "reached" not in out


def test_quit_and_an_unfinished_statement_end_quietly(digits_lake):
    status, out, err = shell(digits_lake["lake"], "SELECT 'before' AS a;\n.quit\nSELECT 'after';\n")
    assert status == 0 and "before" in out and "after" not in out
    status, out, err = shell(digits_lake["lake"], "SELECT 'never finished'\n")
    assert status == 0 and out == "" and err == ""
