"""The house's rules, checked on the code itself: data flows one way (store never imports ingest;
dashboards reach ingest only through ingest.interactive), the lake's file names are spelled in one module,
docs/ARCHITECTURE.md lists every table's columns as the code writes them, and no function runs over 80
lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from store.lake import TABLE_SCHEMAS
from tests.conftest import REPO

PACKAGES = ("ingest", "store", "dashboards")


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, lazy ones inside functions included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_store_never_imports_ingest():
    wrong = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in modules("store")
             for line, name in imported(p) if name.split(".")[0] == "ingest"]
    assert wrong == []


def test_dashboards_reach_ingest_only_through_ingest_interactive():
    wrong = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in modules("dashboards")
             for line, name in imported(p)
             if name.split(".")[0] == "ingest" and not name.startswith("ingest.interactive")]
    assert wrong == []


def test_the_lake_file_names_are_spelled_in_one_module():
    spelled = re.compile(r"""f["'](?:step-|chunk-|r\{rank)""")
    wrong = [f"{p.relative_to(REPO)}:{i}" for package in PACKAGES for p in modules(package)
             if p != REPO / "store" / "lake.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if spelled.search(line)]
    assert wrong == []


def test_architecture_lists_every_table_as_the_code_writes_it():
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for table, schema in TABLE_SCHEMAS.items():
        line = next((row for row in doc.splitlines() if row.startswith(f"- **{table}**:")), None)
        assert line is not None, f"docs/ARCHITECTURE.md does not list table {table}"
        for field in schema:
            assert f"`{field.name}` {field.type}" in line, f"{table}.{field.name} ({field.type}) missing or wrong"
        listed = re.findall(r"`(\w+)` ", line.split(". ", 1)[0])
        assert listed == schema.names, f"{table}: the doc lists {listed}, the code writes {schema.names}"
        assert f"`{table}/" in doc or f"lake/{table}/" in doc, f"no file naming documented for {table}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_function_over_80_lines(package):
    long = [f"{p.relative_to(REPO)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for p in modules(package) for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80]
    assert long == []


def import_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each one imports (lazy imports included)."""
    names = {}
    for package in PACKAGES:
        for path in modules(package):
            parts = path.relative_to(REPO).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        targets = {target for _, target in imported(path)}
        graph[name] = {t for t in targets if t in names and t != name}
    return graph


def test_no_import_cycles_and_no_private_names_across_modules():
    graph = import_graph()
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
    private = [f"{p.relative_to(REPO)}:{line} {name}" for package in PACKAGES for p in modules(package)
               for line, name in imported(p) if name.split(".")[-1].startswith("_") and name.split(".")[0] in PACKAGES
               and not name.endswith("__")]
    assert private == []


def test_every_module_has_its_test_file():
    """tests/test_<module>.py, or tests/test_<package>_<module>.py where two packages share a module name."""
    missing = [str(p.relative_to(REPO)) for package in PACKAGES for p in modules(package)
               if p.stem != "__init__" and p.stem != "__main__"
               and not (REPO / "tests" / f"test_{p.stem}.py").exists()
               and not (REPO / "tests" / f"test_{p.parent.name}_{p.stem}.py").exists()]
    assert missing == []
