"""The map's filters and colouring: classes (searchable by id and name), prompt and tag substrings, the
colouring, how many points are shown, the legend (a key for categories, a colour bar for numeric
colourings, a key for the rings) and a button that fits the view to the visible points."""

from __future__ import annotations

from typing import Callable

import numpy as np
import panel as pn

from dashboards.render import category_colour, choice_options, colour_bar, esc, html_pane, marker_key
from store import maps

COLOUR_CHOICES = {"class / prompt": "label", "tag": "tags", "density": "density",
                  "neighbour audit (k-NN overlap)": "knn_overlap"}
LEGEND_ROWS = 30


class FilterPanel:
    def __init__(self, on_filter: Callable[[], None], on_colour: Callable[[str], None],
                 on_fit: Callable[[], None]) -> None:
        self.classes = pn.widgets.MultiChoice(label="Classes (type to search ids and names)", options={},
                                              placeholder="all classes", sizing_mode="stretch_width")
        self.prompt = pn.widgets.TextInput(label="Prompt contains", placeholder="any prompt", sizing_mode="stretch_width")
        self.tag = pn.widgets.TextInput(label="Tag contains", placeholder="any tag", sizing_mode="stretch_width")
        self.colour = pn.widgets.Select(label="Colour by", options=COLOUR_CHOICES, value="label",
                                        sizing_mode="stretch_width")
        self.fit = pn.widgets.Button(label="Fit view to the shown points", color="default",
                                     css_classes=["lens-fit"])
        self.count = html_pane("", css_classes=["lens-count"])
        self.legend = html_pane("", css_classes=["lens-legend"], max_height=300, styles={"overflow-y": "auto"},
                                sizing_mode="stretch_width")
        for widget in (self.classes, self.prompt, self.tag):
            widget.param.watch(lambda e: on_filter(), "value")
        self.colour.param.watch(lambda e: on_colour(e.new), "value")
        self.fit.on_click(lambda e: on_fit())

    def follow_layout(self, points: maps.MapPoints) -> None:
        """Class choices of the layout's run (kept where the new run has them)."""
        options = choice_options(points.class_options())
        self.classes.param.update(options=options, value=[v for v in self.classes.value if v in options.values()],
                                  visible=bool(options))

    def mask(self, points: maps.MapPoints) -> np.ndarray:
        return points.mask(self.classes.value, self.prompt.value, self.tag.value)

    def show_counts(self, points: maps.MapPoints, keep: np.ndarray) -> None:
        shown, total = int(keep.sum()), len(points)
        self.count.object = f"<b class='lens-shown'>{shown:,}</b> of {total:,} points shown"
        self.legend.object = legend_html(points, keep, self.colour.value)

    def url_values(self) -> dict[str, str]:
        return {"classes": ",".join(str(c) for c in self.classes.value), "prompt": self.prompt.value}

    def widgets(self) -> list:
        return [self.classes, self.prompt, self.tag, self.colour, self.count, self.fit, self.legend]


def legend_html(points: maps.MapPoints, keep: np.ndarray, colour: str) -> str:
    """Categories shown (with their counts and fixed colours), or the colour bar; then the ring key."""
    rings = marker_key(["selected", "neighbour", "collected", "generated"])
    if colour not in ("label", "tags"):
        return colour_bar(colour) + rings
    column = points.frame[colour]
    counts = np.bincount(column.cat.codes.to_numpy()[keep & (column.cat.codes.to_numpy() >= 0)],
                         minlength=len(column.cat.categories))
    codes = points.colour_codes(colour)
    order = np.argsort(-counts, kind="stable")
    rows = [f"<div><span class='swatch' style='background:{category_colour(int(codes[i]))}'></span>"
            f"{esc(column.cat.categories[i])} <span class='lens-legend-count'>({counts[i]:,})</span></div>"
            for i in order[:LEGEND_ROWS] if counts[i]]
    more = int((counts > 0).sum()) - len(rows)
    if more > 0:
        rows.append(f"<div>… and {more:,} more</div>")
    return f"<div class='lens-legend-rows'>{''.join(rows)}</div>{rings}"
