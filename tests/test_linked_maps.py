"""Linked small multiples: layouts side by side sharing filters, hover, selection and groups by sample id;
unit-level on the paired digits lake, then in a real browser against `python -m dashboards serve`."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dashboards.browser import ALL_PLOTS_JS, MARKER_ROLES_JS, coloured_fraction, map_pixels
from dashboards.linked_maps import LinkedMaps, SideBySide, default_layouts
from store import catalogue, connect, maps
from store.lake import LayoutKey
from store.neighbours import build_graph
from tests.conftest import DIGITS_LAYERS, click_in_plot, images_loaded, isolated_point


def student_keys(lake, run_id: str) -> list[LayoutKey]:
    order = DIGITS_LAYERS.split(",")
    return sorted((k for k in catalogue.list_layouts(lake) if k.run_id == run_id), key=lambda k: order.index(k.layer))


def test_default_layouts_spread_layers_or_steps():
    def key(layer, step):
        return LayoutKey("r", layer, "mean", step, f"h{layer}{step}")

    order = [f"l{i}" for i in range(7)]
    chosen = default_layouts([key(layer, 3) for layer in order] + [key("l0", 1)], order)
    assert [(k.layer, k.step) for k in chosen] == [("l0", 3), ("l2", 3), ("l4", 3), ("l6", 3)]
    steps = default_layouts([key("l0", s) for s in range(8)], order)
    assert [k.step for k in steps] == [0, 2, 5, 7]
    assert [k.layer for k in default_layouts([key("l1", 0), key("l0", 0)], order)] == ["l0", "l1"]


def test_filters_groups_and_selection_are_shared(paired_lake):
    lake = str(paired_lake["lake"])
    linked = LinkedMaps(lake, connect(lake))
    keys = student_keys(lake, paired_lake["student"])
    linked.show(keys)
    assert len(linked.panels) == 3 and linked.grid.ncols == 2
    linked.classes.value = [3]
    counts = {int(p.keep.sum()) for p in linked.panels}
    assert counts == {int((linked.panels[0].points.frame["class_id"] == 3).sum())}
    linked.classes.value = []

    first = linked.panels[0]
    xy = first.points.frame[["x", "y"]].to_numpy()
    box = (xy[:, 0].min(), xy[:, 1].min(), np.median(xy[:, 0]), xy[:, 1].max())
    first.map._box(bounds=box)
    inside = (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[2]) & (xy[:, 1] >= box[1]) & (xy[:, 1] <= box[3])
    group = set(first.points.frame["sample_id"].to_numpy()[inside])
    assert set(linked.group_ids) == group and 0 < len(group) < len(xy)
    assert f">{len(group):,}<" in linked.group_info.object
    for panel in linked.panels:  # the group in colour, the rest in grey, in every panel
        image = panel.map.render()
        pixels = np.stack([image.dimension_values(d) for d in ("R", "G", "B")], -1).astype(float)
        pixels = np.round(pixels * 255 if pixels.max() <= 1 else pixels).astype(int)
        grey = (pixels == [0xd0, 0xd0, 0xd0]).all(1).sum()
        coloured = ((pixels.max(1) - pixels.min(1)) > 40).sum()
        assert grey > 0 and coloured > 0, panel.title

    sample = int(first.points.frame["sample_id"].iat[5])
    first.map._tap(x=float(xy[5, 0]), y=float(xy[5, 1]))
    assert linked.selected_id == sample
    html = "".join(getattr(part, "object", "") or "" for part in linked.selection.objects)
    strips = [part for part in linked.selection.objects if hasattr(part, "items")]
    for panel, strip in zip(linked.panels, strips):
        expected = [int(i) for i in build_graph(lake, panel.points.key.run_id, panel.points.key.layer,
                                                panel.points.key.pooling).of(sample, 10)[0]]
        assert panel.neighbour_ids == expected
        assert [c["sample"] for c in strip.items] == expected
        assert f"data-panel='{panel.index}'" in html
    assert html.count("lens-kept") == 2  # the second and third panels say how many neighbours they keep


def displacement(reference: np.ndarray, moved: np.ndarray) -> float:
    """Mean distance between the same points of two layouts, in units of `reference`'s RMS radius."""
    centred = reference - reference.mean(axis=0)
    return float(np.mean(np.hypot(*(reference - moved).T)) / np.sqrt(np.mean(np.sum(centred**2, axis=1))))


def procrustes_expected(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """`moving` fitted onto `reference`, recomputed independently: scipy's orthogonal Procrustes (rotation or
    reflection) plus the least-squares scale and the shift of the means."""
    from scipy.linalg import orthogonal_procrustes

    ref_c, mov_c = reference - reference.mean(0), moving - moving.mean(0)
    rotation, singular_sum = orthogonal_procrustes(mov_c, ref_c)
    return mov_c @ rotation * (singular_sum / (mov_c ** 2).sum()) + reference.mean(0)


def assert_panels_fitted(panels, raw) -> list[tuple[float, float]]:
    """Each panel after the first shows its stored layout Procrustes-fitted onto the first panel's; returns
    (displacement shown, displacement stored) from the first layout per later panel."""
    reference = raw[0].frame[["x", "y"]].to_numpy(np.float64)
    np.testing.assert_array_equal(panels[0].points.frame[["x", "y"]].to_numpy(np.float64), reference)
    moves = []
    for panel, stored in zip(panels[1:], raw[1:]):
        assert np.array_equal(raw[0].frame["sample_id"].to_numpy(), stored.frame["sample_id"].to_numpy())
        assert np.array_equal(panel.points.frame["sample_id"].to_numpy(), stored.frame["sample_id"].to_numpy())
        shown = panel.points.frame[["x", "y"]].to_numpy(np.float64)
        moving = stored.frame[["x", "y"]].to_numpy(np.float64)
        np.testing.assert_allclose(shown, procrustes_expected(reference, moving), atol=1e-3 * np.abs(reference).max())
        moves.append((displacement(reference, shown), displacement(reference, moving)))
    return moves


def test_panels_are_aligned_onto_the_first(paired_lake):
    lake = str(paired_lake["lake"])
    keys = student_keys(lake, paired_lake["student"])
    raw = [maps.points_for(lake, k) for k in keys]
    side = SideBySide(lake, connect(lake), catalogue.list_layouts(lake))
    side.run.value = paired_lake["teacher"]
    side.run.value = paired_lake["student"]
    assert [p.points.key for p in side.linked.panels] == keys
    assert_panels_fitted(side.linked.panels, raw)  # (one run's layers were aligned at embed time already)
    side.align.value = False
    for panel, stored in zip(side.linked.panels, raw):
        assert np.array_equal(panel.points.frame[["x", "y"]].to_numpy(), stored.frame[["x", "y"]].to_numpy())
    # The teacher's layouts were never aligned onto the student's: there the fit must clearly move them closer.
    teacher = [k for k in catalogue.list_layouts(lake) if k.run_id == paired_lake["teacher"] and k.layer == keys[0].layer]
    assert len(teacher) == 2  # its last step and step 0
    linked = LinkedMaps(lake, connect(lake))
    linked.show([keys[0], *teacher])
    moves = assert_panels_fitted(linked.panels, [raw[0], *(maps.points_for(lake, k) for k in teacher)])
    for shown, stored in moves:
        assert shown < 0.8 * stored


# --- in the browser ----------------------------------------------------------------------------------

def wait_for_plots(page, count: int) -> list[dict]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        plots = page.evaluate(ALL_PLOTS_JS) if page.evaluate("() => typeof Bokeh !== 'undefined'") else []
        if len(plots) == count:
            return plots
        page.wait_for_timeout(250)
    raise AssertionError(f"expected {count} plots, found {len(plots)}")


@pytest.mark.browser
def test_click_in_one_panel_selects_the_sample_in_every_panel(paired_server, paired_page):
    page, lake, run_id = paired_page, paired_server["lake"], paired_server["student"]
    page.goto(f"{paired_server['url']}/explorer?tab=side&run={run_id}")
    plots = wait_for_plots(page, 3)
    page.wait_for_timeout(500)
    points = maps.points_for(lake, student_keys(lake, run_id)[0])  # the first panel is not moved
    row = isolated_point(points, np.random.default_rng(1))
    sample = int(points.frame["sample_id"].iat[row])
    for _ in range(3):  # a click during the first render's sync can be dropped: click again, as a user would
        click_in_plot(page, plots[0], float(points.frame["x"].iat[row]), float(points.frame["y"].iat[row]))
        try:
            page.wait_for_selector(f".lens-linked-selection .lens-selected-sample[data-sample='{sample}']",
                                   timeout=8_000)
            break
        except Exception:
            pass
    page.wait_for_selector(f".lens-linked-selection .lens-selected-sample[data-sample='{sample}']", timeout=5_000)
    assert page.locator(".lens-panel-neighbours").count() == 3
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        roles = page.evaluate(MARKER_ROLES_JS)
        if all(r.count("selected") == 1 for r in roles):
            break
        page.wait_for_timeout(200)
    assert [r.count("selected") for r in roles] == [1, 1, 1]  # marked in every panel
    assert all(r.count("neighbour") >= 1 for r in roles)
    page.wait_for_timeout(800)
    assert images_loaded(page, ".lens-linked-selection .lens-thumb img")
    assert page.problems == []


@pytest.mark.browser
def test_a_box_in_one_panel_highlights_the_group_in_the_others(paired_server, paired_page):
    page, run_id = paired_page, paired_server["student"]
    page.goto(f"{paired_server['url']}/explorer?tab=side&run={run_id}")
    plots = wait_for_plots(page, 3)
    page.wait_for_timeout(1000)
    before = [map_pixels(page, i) for i in range(3)]
    assert all(grey_share(p) < 0.001 for p in before)
    page.locator(".lens-panel").first.locator("[title='Box Select']").first.click()
    g = plots[0]
    page.mouse.move(g["left"] + 2, g["top"] + 2)
    page.mouse.down()
    page.mouse.move(g["left"] + g["width"] * 0.5, g["top"] + g["height"] - 2, steps=8)
    page.mouse.up()
    page.wait_for_selector(".lens-group-count", timeout=20_000)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(grey_share(map_pixels(page, i)) > 0.001 for i in (1, 2)):
        page.wait_for_timeout(200)
    for i in (1, 2):  # highlighted group in colour over grey, in the other panels too
        pixels = map_pixels(page, i)
        assert grey_share(pixels) > 0.001 and coloured_fraction(pixels) > grey_share(pixels) * 0.05
    assert page.problems == []


def grey_share(pixels) -> float:
    """The share of a map's pixels in the background grey of points outside a highlighted group."""
    return float((np.abs(pixels.astype(int) - 0xd0).max(2) <= 6).mean())
