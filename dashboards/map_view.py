"""One map component, used by every tab that shows a layout (Map, each panel of Side by side, Compare).

A layout's points are rasterized by datashader at the plot's own size and redrawn on every change of
what the map shows: the layout, the rows passing the filters, the colouring, the highlighted group. Over
the raster sit marker rings (selected, neighbours, collected, generated, hovered; each ring outlined in
black so it reads on any class colour), trajectories, and the outline of the last box or lasso region.

Why a revision counter: a DynamicMap memoizes its output by its streams' values, so re-triggering it
with an unchanged view range returns the old picture. Every change bumps `revision`, which is one of
the streams, so the raster is recomputed at once, without waiting for a zoom.

The owner reacts through callbacks: `on_pick(sample_id)` (a click), `on_hover(sample_id | None)`,
`on_region(rows)` (a box or lasso; rows of the layout among the visible ones).
"""

from __future__ import annotations

from typing import Callable

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the Bokeh options the map sets, also outside a page)
import numpy as np
import pandas as pd
import panel as pn
from bokeh.events import MouseLeave
from bokeh.models import HoverTool

from dashboards.render import (MAP_HEIGHT, MAP_WIDTH, MARKER_COLOURS, home_range, image_url,
                               quick_range_updates, shade, shade_overlay)
from store.maps import MapPoints

Revision = hv.streams.Stream.define("Revision", revision=0)
PICK_PIXELS = 12  # a click picks the nearest visible point within this many pixels; hover within half
FIT_MARGIN = 0.06
TOOLTIP = """<div class="lens-tooltip" style="width:100px">
<img src="@url" width="96" height="96" style="image-rendering:pixelated;background:#000;display:block">
<div style="font-weight:bold;font-size:12px">@label</div><div style="font-size:11px">sample @sample</div></div>"""
EMPTY_MARKERS = pd.DataFrame({"x": [], "y": [], "colour": [], "role": []})
EMPTY_HOVER = pd.DataFrame({"x": [], "y": [], "url": [], "label": [], "sample": []})


class MapView:
    """A datashaded layout with markers, paths and a region outline; see the module docstring."""

    def __init__(self, width: int = MAP_WIDTH, height: int = MAP_HEIGHT, responsive: bool = False,
                 on_pick: Callable[[int], None] | None = None, on_hover: Callable[[int | None], None] | None = None,
                 on_region: Callable[[np.ndarray], None] | None = None) -> None:
        self.width, self.height, self.responsive = width, height, responsive
        self.on_pick, self.on_hover, self.on_region = on_pick, on_hover, on_region
        self.points: MapPoints | None = None
        self.keep: np.ndarray | None = None
        self.colour = "label"
        self.highlight_rows: np.ndarray | None = None
        self.overlay: pd.DataFrame | None = None  # another run's samples placed on this layout (x, y)
        self.hover_id: int | None = None
        self.view_range: tuple | None = None  # what the map shows now (fit or the user's pan and zoom)
        self._stream_range: tuple = (None, None)
        self.range, self.size, self.revision = hv.streams.RangeXY(), hv.streams.PlotSize(), Revision()
        self.markers = hv.streams.Pipe(data=EMPTY_MARKERS)
        self.hovered = hv.streams.Pipe(data=EMPTY_HOVER)
        self.paths = hv.streams.Pipe(data=[])
        self.outline = hv.streams.Pipe(data=[])
        self.raster = hv.DynamicMap(self.render, streams=[self.range, self.size, self.revision])
        self._left = set()  # ids of the Bokeh plots whose mouse leave is heard
        size = {"responsive": True, "min_height": height} if responsive else {"width": width, "height": height}
        self.raster.opts(tools=["tap", "box_select", "lasso_select"], active_tools=["wheel_zoom"],
                         default_tools=["pan", "wheel_zoom", "reset"], xaxis=None, yaxis=None, bgcolor="#ffffff",
                         toolbar="above", hooks=[quick_range_updates, self._hear_leave], framewise=True, **size)
        hv.streams.Tap(source=self.raster, x=None, y=None).add_subscriber(self._tap)
        hv.streams.PointerXY(source=self.raster, x=None, y=None).add_subscriber(self._pointer)
        hv.streams.BoundsXY(source=self.raster, bounds=None).add_subscriber(self._box)
        hv.streams.Lasso(source=self.raster, geometry=None).add_subscriber(self._lasso)
        overlay = (self.raster * hv.DynamicMap(draw_paths, streams=[self.paths])
                   * hv.DynamicMap(draw_outline, streams=[self.outline])
                   * hv.DynamicMap(draw_markers, streams=[self.markers])
                   * hv.DynamicMap(draw_hovered, streams=[self.hovered]))
        sizing = {"sizing_mode": "stretch_width", "min_height": height} if responsive else {
            "sizing_mode": "fixed", "width": width, "height": height}
        # unlinked: Panel would otherwise share x/y ranges between every map on the page, so one map's fit
        # would set another's range without its raster following
        self.pane = pn.pane.HoloViews(overlay, css_classes=["lens-map"], linked_axes=False, **sizing)

    # --- what is drawn -------------------------------------------------------------------------------

    def show(self, points: MapPoints, keep: np.ndarray | None = None, fit: bool = True) -> None:
        """A (new) layout; with `fit`, the view fits its visible points."""
        self.points = points
        self.keep = np.ones(len(points), dtype=bool) if keep is None else keep
        self.highlight_rows = None
        self.outline.send([])
        if fit:
            self.fit()
        else:
            self.redraw()

    def set_filter(self, keep: np.ndarray, fit: bool = True) -> None:
        self.keep = keep
        if fit:
            self.fit()
        else:
            self.redraw()

    def set_colour(self, colour: str) -> None:
        self.colour = colour
        self.redraw()

    def set_highlight(self, rows: np.ndarray | None) -> None:
        """Draw these rows in colour over every other visible point in grey; None: no group."""
        self.highlight_rows = rows
        self.redraw()

    def set_overlay(self, frame: pd.DataFrame | None, redraw: bool = True) -> None:
        """Draw another run's placed samples (x, y) in dark grey under this run's points; None: none."""
        self.overlay = frame
        if redraw:
            self.redraw()

    def redraw(self) -> None:
        self.revision.event(revision=self.revision.revision + 1)

    def fit(self, rows: np.ndarray | None = None) -> None:
        """Show these rows (default: the visible ones), with a margin; all points when none is visible."""
        if self.points is None:
            return
        if rows is None:
            rows = np.flatnonzero(self.keep) if self.keep is not None else np.arange(len(self.points))
        frame = self.points.frame
        if len(rows):
            xs, ys = frame["x"].to_numpy()[rows], frame["y"].to_numpy()[rows]
            extent = (float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max()))
        else:
            extent = self.points.extent
        self.view_range = fitted_range(extent, FIT_MARGIN)
        self.redraw()

    def mark(self, roles: list[tuple[int, str]], extra: pd.DataFrame | None = None) -> None:
        """Rings at these samples ((sample id, role) pairs); `extra`: positions (x, y) of generated samples."""
        frame = marker_positions(self.points, roles) if self.points is not None else EMPTY_MARKERS
        if extra is not None and len(extra):
            frame = pd.concat([frame, extra[["x", "y"]].assign(colour=MARKER_COLOURS["generated"], role="generated")],
                              ignore_index=True)
        self.markers.send(frame)

    def draw_region(self, xs: list[float], ys: list[float]) -> None:
        """Outline a box or lasso region (closed polygon); empty lists clear it."""
        self.outline.send([np.column_stack([xs + xs[:1], ys + ys[:1]])] if xs else [])

    # --- rendering -----------------------------------------------------------------------------------

    def render(self, x_range=None, y_range=None, width=None, height=None, scale=None, revision=0) -> hv.RGB:
        if (x_range, y_range) != self._stream_range:  # the user panned, zoomed or reset
            self._stream_range = (x_range, y_range)
            if x_range is not None and y_range is not None:
                self.view_range = (tuple(x_range), tuple(y_range))
        if self.points is None:
            return hv.RGB(np.zeros((2, 2, 4), dtype=np.uint8), bounds=(0, 0, 1, 1), vdims=list("RGBA"))
        x_range, y_range = self.view_range or home_range(self.points.extent)
        width, height = self.raster_size(width, height)
        frame = self.points.frame
        shown = frame if self.keep.all() else frame[self.keep]
        highlight = None
        if self.highlight_rows is not None:
            rows = self.highlight_rows[self.keep[self.highlight_rows]]
            highlight = frame.iloc[rows]
        codes = self.points.colour_codes(self.colour) if self.colour in ("label", "tags") else np.empty(0)
        rgba = shade(shown, self.colour, x_range, y_range, codes, (0.0, 1.0), width, height, highlight)
        if self.overlay is not None and len(self.overlay):
            under = shade_overlay(self.overlay, x_range, y_range, width, height)
            rgba = np.where(rgba[..., 3:4] > 0, rgba, under)
        return hv.RGB(rgba, bounds=(x_range[0], y_range[0], x_range[1], y_range[1]), kdims=["x", "y"],
                      vdims=list("RGBA"))

    def raster_size(self, width, height) -> tuple[int, int]:
        """Pixels to rasterize at: a fixed map's own size; a responsive one's reported size, never less than
        half its minimum (a plot built in a hidden or squeezed container first reports a tiny size, and a
        raster drawn that small would be shown blown up)."""
        if not self.responsive or not width or not height:
            return self.width, self.height
        return max(int(width), self.width // 2), max(int(height), self.height // 2)

    # --- picking -------------------------------------------------------------------------------------

    def pick_radius(self, pixels: float = PICK_PIXELS) -> float:
        x_range = (self.view_range or home_range(self.points.extent))[0]
        return pixels * (x_range[1] - x_range[0]) / max(self.size.width or self.width, 1)

    def sample_at(self, x, y, pixels: float = PICK_PIXELS) -> int | None:
        if x is None or y is None or self.points is None:
            return None
        row = self.points.nearest(x, y, self.pick_radius(pixels), self.keep)
        return None if row is None else int(self.points.frame["sample_id"].iat[row])

    def _tap(self, x=None, y=None) -> None:
        sample = self.sample_at(x, y)
        if sample is not None and self.on_pick:
            self.on_pick(sample)

    def _pointer(self, x=None, y=None) -> None:
        sample = self.sample_at(x, y, PICK_PIXELS / 2)
        if sample == self.hover_id:
            return
        self.hover_id = sample
        self.hovered.send(hover_frame(self.points, sample) if sample is not None else EMPTY_HOVER)
        if self.on_hover:
            self.on_hover(sample)

    def _hear_leave(self, plot, element) -> None:
        """PointerXY hears mouse moves over the map only, so the point hovered last would keep its ring
        after the mouse leaves the map (the card goes, Bokeh hides it): clear the hover on leaving."""
        model = plot.state
        if model.id not in self._left:
            self._left.add(model.id)
            model.on_event(MouseLeave, lambda event: self._pointer(None, None))

    def _box(self, bounds=None) -> None:
        if bounds is None or self.points is None:
            return
        x0, y0, x1, y1 = bounds
        self.draw_region([x0, x1, x1, x0], [y0, y0, y1, y1])
        if self.on_region:
            self.on_region(self.points.in_box(x0, y0, x1, y1, keep=self.keep))

    def _lasso(self, geometry=None) -> None:
        if geometry is None or len(geometry) <= 2 or self.points is None:
            return
        geometry = np.asarray(geometry)
        xs, ys = list(geometry[:, 0]), list(geometry[:, 1])
        self.draw_region(xs, ys)
        if self.on_region:
            self.on_region(self.points.in_polygon(xs, ys, keep=self.keep))


def fitted_range(extent: tuple[float, float, float, float], margin: float) -> tuple[tuple, tuple]:
    x0, x1, y0, y1 = extent
    pad_x, pad_y = margin * (x1 - x0 or 1.0), margin * (y1 - y0 or 1.0)
    return (x0 - pad_x, x1 + pad_x), (y0 - pad_y, y1 + pad_y)


def marker_positions(points: MapPoints, roles: list[tuple[int, str]]) -> pd.DataFrame:
    """Positions and ring colours of marked samples; samples the layout lacks are left out."""
    ids = np.array([i for i, _ in roles], dtype=np.int64)
    rows = points.rows_of(ids)
    found = rows >= 0
    frame = points.frame
    kept = [r for (_, r), f in zip(roles, found) if f]
    return pd.DataFrame({"x": frame["x"].to_numpy()[rows[found]], "y": frame["y"].to_numpy()[rows[found]],
                         "colour": [MARKER_COLOURS[r] for r in kept], "role": kept})


def hover_frame(points: MapPoints, sample_id: int) -> pd.DataFrame:
    info = points.describe(int(points.rows_of([sample_id])[0]))
    return pd.DataFrame({"x": [info["x"]], "y": [info["y"]], "sample": [str(info["sample_id"])],
                         "url": [image_url(info["run_id"], info["chunk"], info["sample_id"])],
                         "label": [info["label"]]})


def draw_markers(data: pd.DataFrame) -> hv.Overlay:
    """Each marker: a black ring with the role's colour inside, readable on any class colour (each role
    has its own colour, which is how the browser tests tell roles apart)."""
    outer = hv.Points(data[["x", "y"]], kdims=["x", "y"]).opts(
        color="#000000", size=13, fill_alpha=0.0, line_width=4, marker="circle", tools=[], apply_ranges=False)
    inner = hv.Points(data, kdims=["x", "y"], vdims=["colour"]).opts(
        line_color="colour", size=13, fill_alpha=0.0, line_width=2, marker="circle", tools=[], apply_ranges=False)
    return outer * inner


def draw_hovered(data: pd.DataFrame) -> hv.Points:
    """The hovered point: a dark ring, and a preview card (thumbnail, label, id) at the cursor. Bokeh
    escapes the fields it puts into the card."""
    hover = HoverTool(tooltips=TOOLTIP, point_policy="follow_mouse")
    return hv.Points(data, kdims=["x", "y"], vdims=["url", "label", "sample"]).opts(
        color="#222222", size=18, fill_alpha=0.0, line_width=2, line_color="#222222", marker="circle",
        tools=[hover], apply_ranges=False)


def draw_paths(data: list) -> hv.Overlay:
    starts = np.array([p[0] for p in data if len(p)]).reshape(-1, 2)
    return (hv.Path(data, kdims=["x", "y"]).opts(color="#333333", line_alpha=0.55, line_width=1.5, tools=[],
                                                 apply_ranges=False)
            * hv.Points(starts, kdims=["x", "y"]).opts(color="#333333", size=4, tools=[], apply_ranges=False))


def draw_outline(data: list) -> hv.Path:
    return hv.Path(data, kdims=["x", "y"]).opts(color="#333333", line_dash="dashed", line_width=1.5, tools=[],
                                                apply_ranges=False)

