"""The diversity tab on the paired digits lake: the stored table with the teacher's figures beside the
student's under a header of their own, the mean row of both, a class click filtering the map, a
near-duplicate pair opening both images; then in the browser (headers wrapped, not cut)."""

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
    assert class_id_of("3: 3") == 3 and class_id_of("417: balloon (n02782093)") == 417 and class_id_of("3") == 3
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


@pytest.fixture()
def student_view(lake):
    shown = []
    view = DiversityView(lake["root"], connect(lake["root"]), lambda *args: shown.append(args))
    view.run.value = lake["student"]
    view.layer.value = DIGITS_LAYERS.split(",")[-1]
    view.threshold.value = 0.01
    view.clicks = shown
    return view


def test_each_runs_columns_sit_under_its_own_header(student_view, lake):
    this_run = ["distance", "purity", "near-dups", "Vendi", PAIR_COLUMN]
    paired = ["distance (paired)", "purity (paired)", "near-dups (paired)", "Vendi (paired)"]
    expected = {f"{lake['student']} (this run)": this_run, f"{lake['teacher']} (paired)": paired}
    assert student_view.table.groups == expected
    assert list(student_view.table.value.columns) == ["class or prompt", "samples", *this_run, *paired]
    configuration = student_view.table.get_root().configuration  # what Tabulator is given
    headers = {c["title"]: [child["field"] for child in c["columns"]] for c in configuration["columns"]
               if "columns" in c}
    assert headers == expected
    assert configuration["columnDefaults"]["headerWordWrap"] is True
    assert all(student_view.table.titles[name] == name.removesuffix(" (paired)") for name in paired)


def test_the_mean_row_is_the_mean_over_classes_of_both_runs(student_view, lake):
    con = connect(lake["root"])
    means = {}
    for run in ("student", "teacher"):
        means[run] = con.sql(
            "SELECT avg(mean_pairwise_distance), avg(knn_purity), avg(near_duplicate_pairs), avg(vendi_score), "
            "avg(samples), count(*) FROM diversity WHERE run_id = $r AND layer = $l AND threshold = 0.01",
            params={"r": lake[run], "l": student_view.layer.value}).fetchall()[0]
    row = student_view.means.value
    assert len(row) == 1 and list(row.columns) == [c for c in student_view.table.value.columns if c != PAIR_COLUMN]
    assert row["class or prompt"].iat[0] == f"mean of all {means['student'][5]}"
    assert row["samples"].iat[0] == pytest.approx(means["student"][4], abs=0.05)
    for i, name in enumerate(["distance", "purity", "near-dups", "Vendi"]):
        assert row[name].iat[0] == pytest.approx(means["student"][i], abs=0.005)
        assert row[f"{name} (paired)"].iat[0] == pytest.approx(means["teacher"][i], abs=0.005)
    assert student_view.means.groups == student_view.table.groups
    assert "lens-diversity-means" in student_view.means.css_classes


def test_a_click_past_the_classes_filters_nothing(student_view):
    student_view.on_click(Click(len(student_view.table.value), "class or prompt"))
    assert student_view.clicks == []
    student_view.on_click(Click(1, "samples"))
    assert student_view.clicks == [(student_view.run.value, student_view.layer.value,
                                    student_view.table.value["class or prompt"].iat[1])]


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


@pytest.mark.browser
def test_headers_wrap_and_each_run_has_its_group(paired_server, paired_page):
    page = paired_page
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(f"{paired_server['url']}/explorer?tab=diversity")
    page.wait_for_selector(".lens-diversity-table .tabulator-row", timeout=60_000)
    page.wait_for_selector(".lens-diversity-means .tabulator-row", timeout=20_000)
    titles = page.locator(".lens-diversity-table .tabulator-col-title").evaluate_all(
        "els => els.map(e => ({text: e.innerText, cut: e.scrollWidth > e.clientWidth + 1, "
        "lines: Math.round(e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight))}))")
    texts = [t["text"] for t in titles]
    run_id = page.locator("select").first.input_value()
    assert f"{run_id} (this run)" in texts and any(t.endswith("(paired)") for t in texts)
    assert texts.count("Vendi") == 2 and "near-duplicate pair" in texts
    assert [t for t in titles if t["cut"] and t["text"].strip()] == []  # (Tabulator adds a blank one)
    assert any(t["lines"] > 1 for t in titles)  # a long title wraps onto a second line
    assert page.locator(".lens-diversity-means .tabulator-row").count() == 1
    assert page.locator(".lens-diversity-means .tabulator-cell[tabulator-field='class or prompt']").inner_text() \
        .startswith("mean of ")
    assert page.problems == []


@pytest.mark.browser
def test_hostile_class_names_are_text_in_the_diversity_tab_and_the_map_filter(browser, hostile_pair_server):
    """Classes named with HTML/JS: the table's rows, the near-duplicate pair's captions, and (a class clicked)
    the Map tab's class filter show the names as characters; no element is made of them, no script runs."""
    from tests.conftest import checked_page, images_loaded
    from tests.test_comparison_view import HOSTILE_NAMES, shown_as_text

    labels = {f"{c}: {n}" for c, n in HOSTILE_NAMES.items()}
    with checked_page(browser, hostile_pair_server["server"]) as page:
        page.goto(f"{hostile_pair_server['url']}/explorer?tab=diversity")
        page.wait_for_selector(".lens-diversity-table .tabulator-row", timeout=60_000)
        cells = page.locator(".lens-diversity-table .tabulator-cell[tabulator-field='class or prompt']")
        assert set(cells.all_inner_texts()) == labels  # every class, as characters
        pair = page.locator(f".lens-diversity-table .tabulator-cell[tabulator-field='{PAIR_COLUMN}']").first
        row_label = cells.first.inner_text()
        pair.click()
        page.wait_for_selector(".lens-pair figure", timeout=20_000)
        captions = page.locator(".lens-pair figcaption").all_inner_texts()
        assert len(captions) == 2 and all(c.endswith(row_label) for c in captions), captions
        page.wait_for_timeout(800)
        assert images_loaded(page, ".lens-pair img")
        cells.first.click()  # the map, filtered to that class
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            shown = page.locator(".lens-shown")
            if shown.count() and shown.first.inner_text() == "40":
                break
            page.wait_for_timeout(200)
        assert page.locator(".lens-shown").first.inner_text() == "40"
        pills = page.locator(".choices__list--multiple .choices__item >> visible=true").all_inner_texts()
        assert any(p.startswith(row_label) for p in pills), pills  # the class filter names it literally
        page.wait_for_timeout(500)
        shown_as_text(page)
