"""The Diversity tab's "against a reference" section on the featured digits lake (student and teacher against
the real digits, in the shipped digits feature space): the table is the stored figures, the paired run's
beside them, and the readings name the stored recalls; in the browser, the tab shows them."""

from __future__ import annotations

import math

import pytest

from dashboards.fidelity_view import PAIRED, FidelityView
from store import connect
from store.fidelity import shown_value, stored_fidelity
from tests.conftest import REPO, checked_page

SCREENSHOT = REPO / ".cache" / "screenshots" / "fidelity.png"


def test_the_table_and_readings_are_the_stored_figures(featured_lake):
    con = connect(featured_lake["lake"])
    student, teacher = featured_lake["student"], featured_lake["teacher"]
    view = FidelityView(con)
    view.follow(student, teacher)
    assert view.reference.value == f"{featured_lake['real']}\t{featured_lake['layer']}"
    mine = stored_fidelity(con, student, featured_lake["real"], featured_lake["layer"])
    theirs = stored_fidelity(con, teacher, featured_lake["real"], featured_lake["layer"]).set_index("label")
    shown = view.table.value
    assert list(shown["class or prompt"]) == ["all", *[str(c) for c in range(10)]]
    for row, stored in zip(shown.itertuples(index=False), mine.itertuples()):
        assert row[shown.columns.get_loc("samples")] == stored.samples
        assert math.isclose(row[shown.columns.get_loc("recall")], round(stored.recall, 2))
        paired = row[shown.columns.get_loc("recall" + PAIRED)]
        assert math.isclose(paired, round(theirs.loc[stored.label, "recall"], 2))
    lines = view.readings.object
    expected = (f"all samples: {student} recall {shown_value('recall', mine['recall'].iat[0])} vs {teacher} "
                f"{shown_value('recall', theirs.loc['all', 'recall'])} against {featured_lake['real']}")
    assert expected in lines and lines.count("lens-reading") == 4


def test_without_a_stored_table_it_says_which_command_makes_one(paired_lake):
    view = FidelityView(connect(paired_lake["lake"]))
    view.follow(paired_lake["student"], paired_lake["teacher"])
    assert "make fidelity" in view.readings.object and view.table.value.empty


@pytest.mark.browser
def test_the_diversity_tab_shows_the_reference_section(browser, featured_lake, featured_server):
    server = featured_server
    with checked_page(browser, server) as page:
        page.goto(f"{server.url}/explorer?tab=diversity")
        page.wait_for_selector(".lens-fidelity-table .tabulator-row", timeout=60_000)
        assert page.locator(".lens-fidelity-table .tabulator-row").count() == 11
        page.wait_for_selector(".lens-reading", timeout=20_000)
        readings = page.locator(".lens-reading").all_inner_texts()
        assert len(readings) == 4 and readings[0].startswith(f"all samples: {featured_lake['student']} recall")
        page.locator(".lens-fidelity-table").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOT), full_page=True)
        assert page.problems == []
