"""The diversity tab on the paired digits lake: the stored table with the teacher's figures beside the
student's, a class click filtering the map, a near-duplicate pair opening both images; then in the browser."""

from __future__ import annotations

import time

import pytest

from dashboards.diversity_view import PAIR_COLUMN, DiversityView, class_id_of
from store import connect
from store.diversity import diversity
from tests.conftest import DIGITS_LAYERS


class Click:
    def __init__(self, row: int, column: str) -> None:
        self.row, self.column = row, column


@pytest.fixture(scope="module")
def lake(paired_lake, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("diversity-view") / "lake"
    shutil.copytree(paired_lake["lake"], root)
    diversity(root, paired_lake["student"], DIGITS_LAYERS.split(",")[-1], threshold=0.5)  # pairs for sure
    return {"root": str(root), **{k: paired_lake[k] for k in ("student", "teacher")}}


def test_class_ids_are_read_from_labels():
    assert class_id_of("3: 3") == 3 and class_id_of("417: balloon (n02782093)") == 417
    assert class_id_of("a photo: of a cat") is None and class_id_of("plain prompt") is None


def test_table_has_both_runs_and_links_to_the_map(lake):
    shown = []
    view = DiversityView(lake["root"], connect(lake["root"]), lambda *args: shown.append(args))
    view.run.value = lake["student"]
    assert view.partner.value == lake["teacher"]
    view.layer.value = DIGITS_LAYERS.split(",")[-1]
    view.threshold.value = 0.01
    table = view.table.value
    stored = dict(connect(lake["root"]).sql(
        "SELECT label, vendi_score FROM diversity WHERE run_id = $r AND layer = $l AND threshold = 0.01",
        params={"r": lake["teacher"], "l": view.layer.value}).fetchall())
    assert len(table) == 10 and table["Vendi"].tolist() == sorted(table["Vendi"])  # most collapsed first
    for label, theirs in zip(table["class or prompt"], table["Vendi (paired)"]):
        assert theirs == pytest.approx(stored[label], abs=0.005)
    view.on_click(Click(0, "class or prompt"))
    assert shown == [(lake["student"], view.layer.value, table["class or prompt"].iat[0])]


def test_a_pair_opens_both_images(lake):
    view = DiversityView(lake["root"], connect(lake["root"]), lambda *args: None)
    view.run.value = lake["student"]
    view.layer.value = DIGITS_LAYERS.split(",")[-1]
    view.threshold.value = 0.5
    row = next(i for i, pair in enumerate(view.table.value[PAIR_COLUMN]) if pair)
    view.on_click(Click(row, PAIR_COLUMN))
    a, b = (int(i) for i in view.table.value[PAIR_COLUMN].iat[row].split(" & "))
    assert f"data-pair='{a},{b}'" in view.pair.object
    assert f"data-sample='{a}'" in view.pair.object and f"data-sample='{b}'" in view.pair.object


@pytest.mark.browser
def test_clicking_a_class_filters_the_map(paired_server, paired_page):
    page = paired_page
    page.goto(f"{paired_server['url']}/explorer?tab=diversity")
    page.wait_for_selector(".lens-diversity-table .tabulator-row", timeout=60_000)
    first = page.locator(".lens-diversity-table .tabulator-row").first
    cell = first.locator(".tabulator-cell[tabulator-field='class or prompt']")
    label = cell.inner_text()
    class_id = class_id_of(label)
    run_id = page.locator("select").first.input_value()
    cell.click()
    page.wait_for_selector(".lens-shown", timeout=20_000)
    expected = connect(paired_server["lake"]).sql(
        "SELECT count(*) FROM samples WHERE run_id = $r AND class_id = $c", params={"r": run_id, "c": class_id}
    ).fetchall()[0][0]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        shown = int(page.locator(".lens-shown").inner_text().replace(",", ""))
        if shown == expected:
            break
        page.wait_for_timeout(200)
    assert shown == expected > 0
    assert page.problems == []
