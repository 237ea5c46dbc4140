"""The explorer: one layout of one layer as a datashader-rasterized map, with filters, hover
thumbnails, click-to-inspect raw-space neighbours, box/lasso galleries and background re-layout; beside
it, tabs for linked layouts side by side (`linked_maps`), paired-run comparison (`comparison_view`) and
per-class diversity (`diversity_view`).

Served by `make serve` (`python -m dashboards serve`, which runs `panel serve` on this file). Reads the
lake only through `store` (the lake folder comes from $DMD2_LENS_LAKE). URL parameters pre-select a view:
`?run=...&layer=...&step=...&sample=...&classes=3,5&tab=side`.
"""

from __future__ import annotations

import os
import threading

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from dashboards.generate_panel import GeneratePanel
from dashboards.render import (MAP_HEIGHT, MAP_WIDTH, MARKER_COLOURS, category_colour, esc, home_range,
                               html_pane, image_url, marker_frame, quick_range_updates, shade)
from store import connect, maps

LAKE_ENV = "DMD2_LENS_LAKE"
GALLERY_PAGE = 48
MAX_PATHS = 500  # trajectories drawn at once; more selected samples are thinned to a random subset
ZOOM_DEBOUNCE_MS = 20
Revision = hv.streams.Stream.define("Revision", revision=0)
COLOUR_CHOICES = {"class / prompt": "label", "tag": "tags", "density": "density",
                  "neighbour audit (k-NN overlap)": "knn_overlap"}


class Explorer:
    """One browser session's state and widgets."""

    def __init__(self, lake: str, args: dict[str, str] | None = None) -> None:
        self.lake = lake
        self.con = connect(lake)
        self.layouts = maps.list_layouts(lake)
        if not self.layouts:
            raise RuntimeError(f"no layouts in lake {lake}; run `make ingest && make embed` first")
        self.args = args or {}
        self.notices = html_pane("", css_classes=["lens-notices"])
        self.points: maps.MapPoints | None = None
        self.keep: np.ndarray | None = None
        self.view_frame: pd.DataFrame | None = None
        self.selected_id: int | None = None
        self.neighbour_ids: list[int] = []
        self.region_rows = np.empty(0, dtype=np.int64)
        self.doc = pn.state.curdoc

        runs = sorted({k.run_id for k in self.layouts})
        models = maps.run_models(self.con)
        self.run = pn.widgets.Select(label="Run (model)", options={f"{r} ({models.get(r, '?')})": r for r in runs},
                                     value=self._arg("run", runs, runs[0]))
        self.layer = pn.widgets.Select(label="Layer")
        self.step = pn.widgets.Select(label="Step")
        self.version = pn.widgets.Select(label="Layout")
        self.classes = pn.widgets.MultiChoice(label="Classes (type to search ids and names)", options={},
                                              placeholder="all classes")
        self.prompt = pn.widgets.TextInput(label="Prompt contains", placeholder="any prompt")
        self.tag = pn.widgets.TextInput(label="Tag contains", placeholder="any tag")
        self.colour = pn.widgets.Select(label="Colour by", options=COLOUR_CHOICES, value="label")
        self.count = html_pane("", css_classes=["lens-count"])
        self.model_info = html_pane("")
        self.legend = html_pane("", css_classes=["lens-legend"], max_height=300, styles={"overflow-y": "auto"})
        self.hover = html_pane("<i>hover over the map</i>", css_classes=["lens-hover"], height=150)
        self.k = pn.widgets.IntSlider(label="k neighbours", start=1, end=50, value=10)
        self.space = pn.widgets.RadioButtonGroup(options=["raw activations", "2-D map"], value="raw activations")
        self.selected = html_pane("<i>click a point on the map</i>", css_classes=["lens-selected"])
        self.neighbour_view = html_pane("", css_classes=["lens-neighbours"])
        self.collect_selected = pn.widgets.Button(label="Collect point", disabled=True)
        self.collect_neighbours = pn.widgets.Button(label="Collect neighbours", disabled=True)
        self.collected = pn.widgets.MultiChoice(label="Collected samples (click × to remove)", options=[], value=[])
        self.collected_csv = pn.widgets.FileDownload(callback=self._collected_export, filename="collected.csv",
                                                     label="Export collected (CSV)", color="light")
        self.selection_name = pn.widgets.TextInput(label="Save selection as", placeholder="name, e.g. odd-sevens")
        self.save_selection = pn.widgets.Button(label="Save selection (collected + box/lasso)")
        self.selection_status = html_pane("")
        self.gallery_info = html_pane("<i>box- or lasso-select on the map to open a gallery</i>")
        self.gallery = html_pane("", css_classes=["lens-gallery"])
        self.page = pn.widgets.IntInput(label="Page", value=1, start=1, width=90)
        self.export_csv = pn.widgets.FileDownload(callback=lambda: self._region_export("csv"), filename="selection.csv",
                                                  label="Export selection (CSV)", color="light")
        self.export_parquet = pn.widgets.FileDownload(callback=lambda: self._region_export("parquet"),
                                                      filename="selection.parquet",
                                                      label="Export selection (Parquet)", color="light")
        self.umap_neighbours = pn.widgets.IntInput(label="n_neighbors", value=15, start=2, end=200, width=110)
        self.umap_min_dist = pn.widgets.FloatInput(label="min_dist", value=0.1, start=0.0, end=1.0, step=0.05, width=110)
        self.umap_seed = pn.widgets.IntInput(label="seed", value=0, start=0, width=90)
        self.recompute = pn.widgets.Button(label="Recompute layout on filtered points", color="primary")
        self.progress = pn.indicators.Progress(active=False, visible=False, width=300, bar_color="primary")
        self.recompute_status = html_pane("")

        self.markers = hv.streams.Pipe(data=pd.DataFrame({"x": [], "y": [], "role": []}))
        self.generated_positions = pd.DataFrame({"x": [], "y": []})  # generated samples placed on this layout
        self.paths = hv.streams.Pipe(data=[])
        self.show_paths = pn.widgets.Checkbox(label="Trajectories of the selection (across steps or layers)",
                                              css_classes=["lens-paths-toggle"])
        self.paths_info = html_pane("", css_classes=["lens-paths-info"])
        self._full_layouts: list[maps.LayoutKey] | None = None
        self.generate = GeneratePanel(self)
        self.plot = pn.pane.HoloViews(None, sizing_mode="fixed", width=MAP_WIDTH, height=MAP_HEIGHT)

        self._refresh_layer_options()
        self.run.param.watch(lambda e: self._refresh_layer_options(), "value")
        self.layer.param.watch(lambda e: self._refresh_step_options(), "value")
        self.step.param.watch(lambda e: self._refresh_versions(), "value")
        self.version.param.watch(lambda e: self._load_layout(), "value")
        for widget in (self.classes, self.prompt, self.tag):
            widget.param.watch(lambda e: self._apply_filters(), "value")
        self.colour.param.watch(lambda e: self._redraw(), "value")
        for widget in (self.k, self.space):
            widget.param.watch(lambda e: self._show_selected(), "value")
        self.page.param.watch(lambda e: self._show_gallery(), "value")
        self.collect_selected.on_click(lambda e: self._collect([self.selected_id]))
        self.collect_neighbours.on_click(lambda e: self._collect(self.neighbour_ids))
        self.collected.param.watch(lambda e: self._update_markers(), "value")
        self.recompute.on_click(lambda e: self._start_recompute())
        self.save_selection.on_click(lambda e: self._save_selection())
        self.show_paths.param.watch(lambda e: self._update_paths(), "value")
        self._load_layout()
        self._apply_url_selection()

    # --- URL parameters ---------------------------------------------------------------------------

    def _arg(self, name: str, valid: list, default):
        value = self.args.get(name)
        if value is None:
            return default
        if value not in valid:
            self._notice(f"ignored URL parameter {name}={value!r}: not one of the available values")
            return default
        return value

    def _notice(self, text: str) -> None:
        self.notices.object += f"<div class='lens-notice'>{esc(text)}</div>"

    def _apply_url_selection(self) -> None:
        if "classes" in self.args:
            try:
                wanted = [int(c) for c in self.args["classes"].split(",") if c.strip()]
            except ValueError:
                wanted = None
            valid = set(self.classes.options.values()) if isinstance(self.classes.options, dict) else set()
            if wanted is None or not set(wanted) <= valid:
                self._notice(f"ignored URL parameter classes={self.args['classes']!r}: expected class ids such as 3,5")
            else:
                self.classes.value = wanted
        if "sample" in self.args:
            try:
                sample = int(self.args["sample"])
            except ValueError:
                sample = None
            if sample is None or self.points.rows_of([sample])[0] < 0:
                self._notice(f"ignored URL parameter sample={self.args['sample']!r}: no such sample in this layout")
            else:
                self.select_sample(sample)

    # --- layout choice ----------------------------------------------------------------------------

    def _keys(self, **fixed) -> list[maps.LayoutKey]:
        return [k for k in self.layouts if all(getattr(k, f) == v for f, v in fixed.items())]

    def _refresh_layer_options(self) -> None:
        recorded = maps.run_layers(self.con, self.run.value)
        layers = sorted({k.layer for k in self._keys(run_id=self.run.value)},
                        key=lambda layer: (recorded.index(layer) if layer in recorded else len(recorded), layer))
        current = self.layer.value if self.layer.value in layers else self._arg("layer", layers, layers[0])
        self.layer.param.update(options=layers, value=current)
        self._refresh_step_options()

    def _refresh_step_options(self) -> None:
        steps = sorted({k.step for k in self._keys(run_id=self.run.value, layer=self.layer.value)})
        labels = {str(s): s for s in steps}
        default = labels.get(self.args.get("step", ""), steps[-1])
        value = self.step.value if self.step.value in steps else default
        self.step.param.update(options=labels, value=value)
        self._refresh_versions()

    def _refresh_versions(self) -> None:
        keys = self._keys(run_id=self.run.value, layer=self.layer.value, step=self.step.value)
        options = {f"{k.pooling} · {k.params_hash[:8]}": k for k in keys}
        value = self.version.value if self.version.value in keys else keys[0]
        self.version.param.update(options=options, value=value)

    @property
    def key(self) -> maps.LayoutKey:
        return self.version.value

    def _load_layout(self) -> None:
        key = self.key
        if key is None or (self.points is not None and self.points.key == key):
            return
        self.points = maps.points_for(self.lake, key)
        self.model_info.object = (f"<div class='lens-model'>model <b>{esc(self.points.model)}</b> · "
                                  f"{len(self.points):,} points</div>")
        if self.points.has_classes:
            options = {f"{i}: {name}": i for i, name in self.points.class_names.items()}
        else:
            options = {}
        self.classes.param.update(options=options, value=[v for v in self.classes.value if v in options.values()])
        self._apply_filters(reset_range=True)
        if self.selected_id is not None:  # keep the selection across layers and steps
            if self.points.rows_of([self.selected_id])[0] >= 0:
                self._show_selected()
            else:
                self._clear_selection()
        self.region_rows = np.empty(0, dtype=np.int64)
        self._show_gallery()
        self.generate.follow_layout()

    def on_next_tick(self, callback) -> None:
        """Run `callback` in the session's event loop (from a background thread), or now without a server."""
        if self.doc is not None:
            self.doc.add_next_tick_callback(callback)
        else:
            callback()

    # --- filters and drawing ----------------------------------------------------------------------

    def _apply_filters(self, reset_range: bool = False) -> None:
        self.keep = self.points.mask(self.classes.value, self.prompt.value, self.tag.value)
        self.view_frame = self.points.frame if self.keep.all() else self.points.frame[self.keep]
        shown, total = int(self.keep.sum()), len(self.points)
        self.count.object = f"<b class='lens-shown'>{shown:,}</b> of {total:,} points shown"
        if reset_range:
            self._update_legend()
            self.plot.object = self._build_plot()  # a new layout: a new figure fitted to its extent
        else:
            self._redraw()

    def _categories(self) -> list[str]:
        column = self.colour.value
        return list(self.points.frame[column].cat.categories) if column in ("label", "tags") else []

    def _update_legend(self) -> None:
        column = self.colour.value
        if column not in ("label", "tags"):
            self.legend.object = ""
            return
        counts = self.view_frame[column].value_counts(sort=True)
        categories = list(self.points.frame[column].cat.categories)
        rows = []
        for label, n in counts.head(30).items():
            if n == 0:
                continue
            swatch = category_colour(categories.index(label))
            rows.append(f"<div><span class='swatch' style='display:inline-block;width:10px;height:10px;"
                        f"margin-right:4px;background:{swatch}'></span>{esc(label)} "
                        f"<span class='lens-legend-count'>({n:,})</span></div>")
        more = int((counts > 0).sum()) - len(rows)
        if more > 0:
            rows.append(f"<div>… and {more:,} more</div>")
        self.legend.object = f"<div class='lens-legend-rows'>{''.join(rows)}</div>"

    def _redraw(self) -> None:
        self._update_legend()
        if self.plot.object is not None:
            self.revision.event(revision=self.revision.revision + 1)

    def _render(self, x_range=None, y_range=None, width=None, height=None, scale=None, revision=0) -> hv.RGB:
        frame = self.view_frame
        home_x, home_y = home_range(self.points.extent)
        x_range, y_range = x_range or home_x, y_range or home_y
        column = self.colour.value
        span = (0.0, 1.0)
        width, height = max(int(width or MAP_WIDTH), 1), max(int(height or MAP_HEIGHT), 1)
        rgba = shade(frame, column, x_range, y_range, self._categories(), span, width, height)
        bounds = (x_range[0], y_range[0], x_range[1], y_range[1])
        return hv.RGB(rgba, bounds=bounds, kdims=["x", "y"], vdims=["R", "G", "B", "A"])

    def _draw_markers(self, data: pd.DataFrame) -> hv.Points:
        return hv.Points(data, kdims=["x", "y"], vdims=["role"]).opts(
            color="role", cmap=MARKER_COLOURS, size=9, fill_alpha=0.0, line_width=2, marker="circle",
            show_legend=False, tools=[])

    def _build_plot(self) -> hv.Overlay:
        self.range = hv.streams.RangeXY()
        self.size = hv.streams.PlotSize()
        self.revision = Revision()
        self.map = hv.DynamicMap(self._render, streams=[self.range, self.size, self.revision])
        self.map.opts(width=MAP_WIDTH, height=MAP_HEIGHT, tools=["tap", "box_select", "lasso_select"],
                      active_tools=["wheel_zoom"], default_tools=["pan", "wheel_zoom", "reset"], xaxis=None,
                      yaxis=None, bgcolor="#ffffff", toolbar="above", hooks=[quick_range_updates])
        marker_layer = hv.DynamicMap(self._draw_markers, streams=[self.markers])
        path_layer = hv.DynamicMap(self._draw_paths, streams=[self.paths])
        tap = hv.streams.Tap(source=self.map, x=None, y=None)
        tap.add_subscriber(self._on_tap)
        pointer = hv.streams.PointerXY(source=self.map, x=None, y=None)
        pointer.add_subscriber(self._on_hover)
        box = hv.streams.BoundsXY(source=self.map, bounds=None)
        box.add_subscriber(self._on_box)
        lasso = hv.streams.Lasso(source=self.map, geometry=None)
        lasso.add_subscriber(self._on_lasso)
        return self.map * path_layer * marker_layer

    def _pick_radius(self) -> float:
        x_range = self.range.x_range or self.points.extent[:2]
        return 12 * (x_range[1] - x_range[0]) / MAP_WIDTH  # about 12 pixels

    # --- hover and click --------------------------------------------------------------------------

    def _on_hover(self, x=None, y=None) -> None:
        if x is None or y is None or self.points is None:
            return
        row = self.points.nearest(x, y, self._pick_radius() / 2, self.keep)
        if row is None:
            return
        info = self.points.describe(row)
        self.hover.object = (f"<div class='lens-hover-card' data-sample='{info['sample_id']}'>"
                             f"<img src='{esc(image_url(info['run_id'], info['chunk'], info['sample_id']))}'>"
                             f"<div><b>{esc(info['label'])}</b></div><div>sample {info['sample_id']} · "
                             f"seed {info['seed']}</div></div>")

    def _on_tap(self, x=None, y=None) -> None:
        if x is None or y is None:
            return
        row = self.points.nearest(x, y, self._pick_radius(), self.keep)
        if row is not None:
            self.select_sample(int(self.points.frame["sample_id"].iat[row]))

    def select_sample(self, sample_id: int) -> None:
        self.selected_id = int(sample_id)
        self.collect_selected.disabled = False
        self.collect_neighbours.disabled = False
        self.generate.follow_selection()
        self._show_selected()

    def _clear_selection(self) -> None:
        self.selected_id, self.neighbour_ids = None, []
        self.generate.follow_selection()
        self.selected.object = "<i>click a point on the map</i>"
        self.neighbour_view.object = ""
        self._update_markers()

    def _show_selected(self) -> None:
        if self.selected_id is None:
            return
        row = int(self.points.rows_of([self.selected_id])[0])
        if row < 0:
            return self._clear_selection()
        info = self.points.describe(row)
        meta = "".join(f"<tr><td>{esc(k)}</td><td>{esc(f'{v:.3f}' if isinstance(v, float) else v)}</td></tr>"
                       for k, v in info.items() if k not in ("x", "y") and v not in (None, ""))
        self.selected.object = (
            f"<div class='lens-selected-sample' data-sample='{info['sample_id']}'>"
            f"<img src='{esc(image_url(info['run_id'], info['chunk'], info['sample_id'], thumb=False))}'>"
            f"<div><b>{esc(info['label'])}</b></div><table class='lens-meta'>{meta}</table></div>")
        k = int(self.k.value)
        if self.space.value == "raw activations":
            ids, distances = maps.raw_neighbours(self.con, self.lake, self.key, self.selected_id, k)
            rows = self.points.rows_of(ids)
            title = f"{len(ids)} nearest in raw activation space (cosine distance)"
        else:
            rows, distances = self.points.map_neighbours(row, k)
            ids = self.points.frame["sample_id"].to_numpy()[rows].tolist()
            raw_ids, _ = maps.raw_neighbours(self.con, self.lake, self.key, self.selected_id, k)
            overlap = len(set(ids) & set(raw_ids))
            title = (f"{len(ids)} nearest on the 2-D map (map distance); "
                     f"<span class='lens-overlap'>{overlap} of {k}</span> are also raw-space neighbours")
        self.neighbour_ids = [int(i) for i in ids]
        cards = []
        for sample, r, d in zip(self.neighbour_ids, rows, distances):
            label = self.points.describe(int(r))["label"] if r >= 0 else "(not in layout)"
            chunk = int(self.points.frame["chunk"].iat[int(r)]) if r >= 0 else 0
            cards.append(f"<div class='lens-thumb' data-sample='{sample}'>"
                         f"<img src='{esc(image_url(self.key.run_id, chunk, sample))}' loading='lazy'>"
                         f"<div>{esc(label)}</div><div class='lens-distance'>{d:.4f}</div></div>")
        self.neighbour_view.object = f"<div>{title}</div><div class='lens-thumbs'>{''.join(cards)}</div>"
        self._update_markers()

    def _update_markers(self) -> None:
        if self.points is None:
            return
        roles = [(i, "collected") for i in self.collected.value]
        roles += [(i, "neighbour") for i in self.neighbour_ids]
        if self.selected_id is not None:
            roles.append((self.selected_id, "selected"))
        generated = self.generated_positions.assign(role="generated")
        self.markers.send(pd.concat([marker_frame(self.points, roles), generated], ignore_index=True))
        self._update_paths()

    # --- trajectories -------------------------------------------------------------------------------

    def _update_paths(self) -> None:
        """Each selected sample's path (selected, collected, box/lasso) across the run's steps for this
        layer, or across its layers for a one-step run, aligned onto this layout; thinned to MAX_PATHS."""
        if not self.show_paths.value or self.points is None:
            if self.paths.data:  # every marker update passes here: send nothing when nothing is drawn
                self.paths.send([])
            self.paths_info.object = ""
            return
        if self._full_layouts is None:
            self._full_layouts = maps.full_layouts(self.lake, self.layouts)
        kind, keys = maps.trajectory_layouts(self._full_layouts, self.key, maps.run_layers(self.con, self.key.run_id))
        rows = self.points.rows_of(self.collected.value)
        ids = self.points.frame["sample_id"].to_numpy()[np.union1d(rows[rows >= 0], self.region_rows).astype(np.int64)]
        ids = np.union1d(ids, [self.selected_id] if self.selected_id is not None else []).astype(np.int64)
        if len(keys) < 2 or not len(ids):
            self.paths.send([])
            self.paths_info.object = ("<i>select, collect or box-select samples to draw their paths</i>" if len(keys) > 1
                                      else "<i>this run has one layout of this kind; embed more steps or layers</i>")
            return
        total = len(ids)
        if total > MAX_PATHS:
            ids = np.sort(np.random.default_rng(0).choice(ids, MAX_PATHS, replace=False))
        paths = maps.trajectories(self.lake, self.points, keys, ids)
        self.paths.send([p[np.isfinite(p).all(1)] for p in paths])
        names = [f"step {k.step}" if kind == "steps" else k.layer for k in keys]
        thinned = f" (a random {MAX_PATHS:,} of {total:,})" if total > MAX_PATHS else ""
        self.paths_info.object = (f"<div class='lens-paths' data-paths='{len(paths)}' data-kind='{kind}'>"
                                  f"{len(paths):,} paths{thinned} across {len(keys)} {kind}, from the dot: "
                                  f"{esc(' → '.join(names))}</div>")

    def _draw_paths(self, data: list) -> hv.Overlay:
        starts = np.array([p[0] for p in data if len(p)]).reshape(-1, 2)
        return (hv.Path(data, kdims=["x", "y"]).opts(color="#333333", line_alpha=0.55, line_width=1.5, tools=[])
                * hv.Points(starts, kdims=["x", "y"]).opts(color="#333333", size=4, tools=[]))

    def show_label(self, run_id: str, layer: str, label: str) -> None:
        """Filter the map to one class ("3: 3") or prompt of a run, on this layer when it is laid out."""
        from dashboards.diversity_view import class_id_of

        runs = list(self.run.options.values())
        if run_id in runs:
            self.run.value = run_id
        if layer in self.layer.options:
            self.layer.value = layer
        class_id = class_id_of(label)
        if class_id is not None and self.points.has_classes:
            self.prompt.value = ""
            self.classes.value = [class_id]
        else:
            self.classes.value = []
            self.prompt.value = label

    # --- collected set ----------------------------------------------------------------------------

    def _collect(self, sample_ids: list[int | None]) -> None:
        new = [int(i) for i in sample_ids if i is not None]
        value = list(dict.fromkeys([*self.collected.value, *new]))
        self.collected.param.update(options=list(dict.fromkeys([*self.collected.options, *value])), value=value)

    def _collected_export(self):
        rows = self.points.rows_of(self.collected.value)
        return maps.export_selection(maps.selection_frame(self.points, rows[rows >= 0]), "csv")

    def selection(self) -> pd.DataFrame:
        """What is selected in the browser: the collected samples and the box/lasso region, with metadata
        and map positions (for notebooks; "Save selection" stores the same in the lake)."""
        rows = self.points.rows_of(self.collected.value)
        rows = np.union1d(rows[rows >= 0], self.region_rows).astype(np.int64)
        return maps.selection_frame(self.points, rows)

    def _save_selection(self) -> None:
        from store.selections import SelectionError, save_selection

        name = self.selection_name.value.strip()
        try:
            save_selection(self.lake, name, self.selection())
        except SelectionError as err:
            self.selection_status.object = f"<span class='lens-error'>{esc(err)}</span>"
            return
        self.selection_status.object = (f"<span class='lens-saved' data-name='{esc(name)}'>saved as {esc(name)}: "
                                        f"<code>store.selections.read_selection(lake, {esc(repr(name))})</code></span>")

    # --- box / lasso gallery ------------------------------------------------------------------------

    def _on_box(self, bounds=None) -> None:
        if bounds is not None:
            self.region_rows = self.points.in_box(*bounds, keep=self.keep)
            self.page.value = 1
            self._show_gallery()
            self._update_paths()

    def _on_lasso(self, geometry=None) -> None:
        if geometry is not None and len(geometry) > 2:
            geometry = np.asarray(geometry)
            self.region_rows = self.points.in_polygon(list(geometry[:, 0]), list(geometry[:, 1]), keep=self.keep)
            self.page.value = 1
            self._show_gallery()
            self._update_paths()

    def _show_gallery(self) -> None:
        rows = self.region_rows
        if not len(rows):
            self.gallery_info.object = "<i>box- or lasso-select on the map to open a gallery</i>"
            self.gallery.object = ""
            return
        pages = max(1, -(-len(rows) // GALLERY_PAGE))
        page = min(max(1, int(self.page.value)), pages)
        counts = self.points.frame["label"].iloc[rows].value_counts().head(12)
        summary = ", ".join(f"{esc(label)}: {n:,}" for label, n in counts.items() if n)
        self.gallery_info.object = (f"<b class='lens-region-count'>{len(rows):,}</b> selected · page {page} of {pages}"
                                    f"<div>{summary}</div>")
        frame = self.points.frame
        cards = []
        for r in rows[(page - 1) * GALLERY_PAGE: page * GALLERY_PAGE]:
            sample = int(frame["sample_id"].iat[r])
            cards.append(f"<div class='lens-thumb' data-sample='{sample}'><img loading='lazy' "
                         f"src='{esc(image_url(self.key.run_id, int(frame['chunk'].iat[r]), sample))}'>"
                         f"<div>{esc(frame['label'].iat[r])}</div></div>")
        self.gallery.object = f"<div class='lens-thumbs'>{''.join(cards)}</div>"

    def _region_export(self, fmt: str):
        return maps.export_selection(maps.selection_frame(self.points, self.region_rows), fmt)

    # --- recompute layout ---------------------------------------------------------------------------

    def _start_recompute(self) -> None:
        from store.layouts import LayoutParams

        ids = self.points.frame["sample_id"].to_numpy()[self.keep]
        if len(ids) < 20:
            self.recompute_status.object = "<span class='lens-error'>need at least 20 filtered points</span>"
            return
        params = LayoutParams(n_neighbors=int(self.umap_neighbours.value), min_dist=float(self.umap_min_dist.value),
                              seed=int(self.umap_seed.value))
        self.recompute.disabled = True
        self.progress.param.update(visible=True, active=True)
        self.recompute_status.object = (f"<span class='lens-recompute-status'>laying out {len(ids):,} points in the "
                                        "background…</span>")
        key = self.key
        threading.Thread(target=self._recompute, args=(key, ids, params), daemon=True).start()

    def _recompute(self, key: maps.LayoutKey, ids: np.ndarray, params) -> None:
        from store.embed import embed_subset

        try:
            new_key = embed_subset(self.lake, key, ids, params)
            error = None
        except Exception as err:  # shown to the user; the map stays usable
            new_key, error = None, f"{type(err).__name__}: {err}"

        def finish() -> None:
            self.recompute.disabled = False
            self.progress.param.update(visible=False, active=False)
            if error:
                self.recompute_status.object = f"<span class='lens-error'>{esc(error)}</span>"
                return
            self.layouts = maps.list_layouts(self.lake)
            self.recompute_status.object = (f"<span class='lens-recompute-done'>saved layout "
                                            f"{esc(new_key.params_hash[:8])} ({len(ids):,} points)</span>")
            self._refresh_versions()
            self.version.value = new_key

        self.on_next_tick(finish)

    # --- page ---------------------------------------------------------------------------------------

    def view(self) -> pn.viewable.Viewable:
        sidebar = pn.Column(
            "## dmd2-lens", self.notices, self.run, self.layer, self.step, self.version,
            self.model_info,
            self.classes, self.prompt, self.tag, self.colour, self.count, self.legend,
            self.generate.view(),
            "### Recompute layout", pn.Row(self.umap_neighbours, self.umap_min_dist, self.umap_seed),
            self.recompute, self.progress, self.recompute_status, width=300)
        inspector = pn.Column(
            "### Hover", self.hover, "### Selected", self.selected, self.generate.regenerate_button,
            self.generate.regenerate_status, self.k, self.space, self.neighbour_view,
            pn.Row(self.collect_selected, self.collect_neighbours), self.collected, self.collected_csv,
            self.selection_name, self.save_selection, self.selection_status,
            "### Trajectories", self.show_paths, self.paths_info, width=380)
        gallery = pn.Column(self.generate.results, "### Selection gallery", self.gallery_info,
                            pn.Row(self.page, self.export_csv, self.export_parquet), self.gallery)
        return pn.Row(sidebar, pn.Column(self.plot, gallery), inspector)


TABS = {"map": 0, "side": 1, "compare": 2, "diversity": 3}


class Page:
    """One session's page: the explorer's map, and tabs for layouts side by side, paired-run comparison
    and diversity (each built when first opened). `args` are URL parameters; `tab=side|compare|diversity`
    opens a tab directly. In a notebook, display it (`notebook(lake)` sets Panel up) and read what the
    browser selected with `page.explorer.selection()`."""

    def __init__(self, lake: str, args: dict[str, str] | None = None) -> None:
        from dashboards.comparison_view import ComparisonView
        from dashboards.diversity_view import DiversityView
        from dashboards.linked_maps import SideBySide

        args = args or {}
        self.lake = lake
        self.explorer = explorer = Explorer(lake, args)
        self.tabs = pn.Tabs(("Map", explorer.view()), ("Side by side", pn.Column()), ("Compare runs", pn.Column()),
                            ("Diversity", pn.Column()), dynamic=True)
        self.builders = {
            TABS["side"]: lambda: SideBySide(lake, explorer.con, explorer.layouts).view(),
            TABS["compare"]: lambda: ComparisonView(lake, explorer.con, explorer.layouts).view(),
            TABS["diversity"]: lambda: DiversityView(lake, explorer.con, self.show_on_map).view(),
        }
        self.tabs.param.watch(lambda event: self.build(event.new), "active")
        if args.get("tab") in TABS:
            self.tabs.active = TABS[args["tab"]]
        elif "tab" in args:
            explorer._notice(f"ignored URL parameter tab={args['tab']!r}: use one of {', '.join(TABS)}")

    def build(self, index: int) -> None:
        if index in self.builders:
            self.tabs[index].objects = [self.builders.pop(index)()]

    def show_on_map(self, run_id: str, layer: str, label: str) -> None:
        self.explorer.show_label(run_id, layer, label)
        self.tabs.active = TABS["map"]

    def view(self) -> pn.Tabs:
        return self.tabs

    def _repr_mimebundle_(self, include=None, exclude=None):  # shown inline in Jupyter
        return self.tabs._repr_mimebundle_(include, exclude)


def notebook(lake: str = "lake") -> Page:
    """The explorer for a Jupyter notebook: sets up Panel's extension, serves images inline (the notebook
    has no image route), and returns the page; display it, then read selections back with
    `page.explorer.selection()`."""
    from dashboards.render import inline_images

    pn.extension("tabulator")
    inline_images(lake)
    return Page(lake)


def app() -> pn.viewable.Viewable:
    """The served page (`panel serve`), for the lake in $DMD2_LENS_LAKE."""
    lake = os.environ.get(LAKE_ENV, "lake")
    args = {k: v[0].decode("utf-8", "replace") for k, v in (pn.state.session_args or {}).items() if v}
    try:
        return Page(lake, args).view()
    except RuntimeError as err:
        return html_pane(f"<div class='lens-error'>{esc(err)}</div>")


pn.extension("tabulator", notifications=False)
hv.extension("bokeh", logo=False)
# HoloViews waits for 100 ms of quiet before sending a new view range; a raster of the new view costs
# ~40 ms at 1M points, so answer sooner.
from holoviews.plotting.bokeh.callbacks import RangeXYCallback  # noqa: E402

RangeXYCallback.debounce = ZOOM_DEBOUNCE_MS

if pn.state.served:
    app().servable(title="dmd2-lens explorer")
