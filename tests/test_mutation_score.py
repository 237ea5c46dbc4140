"""The mutation score's bookkeeping (tests/mutation_score.py): statuses parsed, modules grouped, equivalents
read from docs/QUALITY.md."""

from __future__ import annotations

from tests.mutation_score import equivalent_mutants, function_of, parse, scored, table

QUALITY_EXCERPT = """
### `store.metrics`

- `x_cosine_knn__mutmut_5` (survived): `a` → `b`: **equivalent**: adds 1 to every distance
- `x_linear_cka__mutmut_8` (survived): `a` → `b`: not caught: a gap

### `dashboards.render`

- `x_esc__mutmut_4` (survived): `a` → `b`: **equivalent**: html.escape quotes by default
"""


def test_equivalents_are_read_with_their_module():
    assert equivalent_mutants(QUALITY_EXCERPT) == {"store.metrics.x_cosine_knn__mutmut_5",
                                                  "dashboards.render.x_esc__mutmut_4"}


def test_scores_per_module_leave_out_equivalents_and_unscored_functions(monkeypatch):
    import tests.mutation_score as score

    lines = ["    store.metrics.x_cosine_knn__mutmut_5: survived", "    store.metrics.x_cosine_knn__mutmut_6: killed",
             "    store.metrics.x_linear_cka__mutmut_8: survived", "    store.metrics.x_linear_cka__mutmut_9: timeout",
             "    store.maps.xǁMapPointsǁmask__mutmut_1: killed", "    store.maps.x_sample_image__mutmut_1: survived",
             "not a mutant line"]
    statuses = parse(lines)
    assert len(statuses) == 6 and statuses["store.metrics.x_linear_cka__mutmut_9"] == "timeout"
    assert function_of("store.maps.xǁMapPointsǁmask__mutmut_1") == "mask"
    assert scored("store.maps.xǁMapPointsǁmask__mutmut_1") and not scored("store.maps.x_sample_image__mutmut_1")
    monkeypatch.setattr(score, "EQUIVALENT", {"store.metrics.x_cosine_knn__mutmut_5"})
    rows = {row[0]: row[1:] for row in table(statuses)}
    assert rows["store.metrics"] == (4, 2, 1, 1, 2 / 3)  # mutants, killed, equivalent, other, score
    assert rows["store.maps"] == (1, 1, 0, 0, 1.0)
