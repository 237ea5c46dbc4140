"""Per-module mutation score of a finished `mutmut run` (what `make mutate` prints; docs/QUALITY.md).

Reads `mutmut results --all true` (one `name: status` line per mutant), groups the mutants by module and
prints, per module, how many were killed (a timeout counts as killed), survived or reached no test, and the
score: killed / (all mutants - the equivalent ones, which docs/QUALITY.md names with the reason). Of `store/maps.py` only the
filter and pick functions are scored. Exits 1 when a module scores under `TARGET`.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

TARGET = 0.85
MODULES = ["store.metrics", "store.neighbours", "store.layouts", "store.compare", "store.diversity",
           "store.placement", "store.maps", "dashboards.render"]
MAPS_FUNCTIONS = {"mask", "nearest", "in_box", "in_polygon", "rows_of", "class_of_label", "pick_layout"}
KILLED = {"killed", "timeout"}
QUALITY = Path(__file__).resolve().parents[1] / "docs" / "QUALITY.md"
SURVIVOR = re.compile(r"^- `(?P<name>[^`]+__mutmut_\d+)` .*: \*\*equivalent\*\*")


def equivalent_mutants(text: str) -> set[str]:
    """Mutants that cannot change behaviour, as docs/QUALITY.md names them (each with its reason): a bullet
    "- `x_f__mutmut_3` (...): ... **equivalent**: why" under its module's heading "### `store.metrics`"."""
    names, module = set(), None
    for line in text.splitlines():
        if line.startswith("### `"):
            module = line.strip("# `")
        elif (found := SURVIVOR.match(line)) and module:
            names.add(f"{module}.{found['name']}")
    return names


EQUIVALENT = equivalent_mutants(QUALITY.read_text()) if QUALITY.exists() else set()


def function_of(mutant: str) -> str:
    """The mutated function's own name: `store.maps.xǁMapPointsǁmask__mutmut_3` -> `mask`."""
    head = mutant.partition("__mutmut_")[0].rpartition(".")[2]
    return head.rpartition("ǁ")[2] if "ǁ" in head else head.removeprefix("x_")


def module_of(mutant: str) -> str:
    return mutant.partition("__mutmut_")[0].rpartition(".")[0]


def scored(mutant: str) -> bool:
    module = module_of(mutant)
    return module in MODULES and (module != "store.maps" or function_of(mutant) in MAPS_FUNCTIONS)


def parse(lines: list[str]) -> dict[str, str]:
    """mutant name -> status, from `mutmut results --all true` lines."""
    statuses = {}
    for line in lines:
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    return statuses


def table(statuses: dict[str, str]) -> list[tuple[str, int, int, int, int, float]]:
    """(module, mutants, killed, equivalent, other, score) per module, in MODULES order."""
    by_module: dict[str, collections.Counter] = {m: collections.Counter() for m in MODULES}
    for name, status in statuses.items():
        if scored(name):
            kind = "equivalent" if name in EQUIVALENT else "killed" if status in KILLED else "other"
            by_module[module_of(name)][kind] += 1
    rows = []
    for module, counts in by_module.items():
        total = sum(counts.values())
        counted = total - counts["equivalent"]
        score = counts["killed"] / counted if counted else 1.0
        rows.append((module, total, counts["killed"], counts["equivalent"], counts["other"], score))
    return rows


def main() -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    output = subprocess.run([str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True)
    statuses = parse(output.stdout.splitlines())
    rows = table(statuses)
    print(f"{'module':<20} {'mutants':>8} {'killed':>7} {'equiv.':>7} {'survived':>9} {'score':>7}")
    for module, total, killed, equivalent, other, score in rows:
        print(f"{module:<20} {total:>8} {killed:>7} {equivalent:>7} {other:>9} {score:>7.1%}")
    for name, status in sorted(statuses.items()):
        if scored(name) and status not in KILLED and name not in EQUIVALENT:
            print(f"  {status}: {name}   (mutmut show {name})")
    return 0 if all(row[-1] >= TARGET for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
