"""The explorer page: a Panel template with the active tab's controls in the sidebar and, in the main
area, tabs for the map (`map_tab`), layouts side by side (`linked_maps`), paired-run comparison
(`comparison_view`) and per-class diversity (`diversity_view`).

Served by `make serve` (`python -m dashboards serve`, which runs `panel serve` on this file). Reads the
lake only through `store` (the lake folder comes from $DMD2_LENS_LAKE). The address bar follows the view
(run, layer, step, layout, classes, prompt, sample, tab), so copying it shares the view:
`?run=...&layer=...&step=...&layout=...&classes=3,5&sample=12&tab=side`.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
import weakref

import holoviews as hv
import panel as pn
from holoviews.plotting.bokeh.callbacks import RangeXYCallback

from dashboards.comparison_view import ComparisonView
from dashboards.diversity_view import DiversityView
from dashboards.linked_maps import SideBySide
from dashboards.map_tab import MapTab
from dashboards.render import esc, html_pane, inline_images

LAKE_ENV = "DMD2_LENS_LAKE"
TITLE = "dmd2-lens"
TABS = {"map": 0, "side": 1, "compare": 2, "diversity": 3}
# HoloViews waits for 100 ms of quiet before sending a new view range; a raster of the new view costs
# ~40 ms at 1M points, so answer sooner.
ZOOM_DEBOUNCE_MS = 20
SESSIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # a session's document -> its Page
log = logging.getLogger(__name__)


class Page:
    """One session's page. In a notebook, display it (`notebook(lake)` sets Panel up) and read what the
    browser selected with `page.explorer.selection()`."""

    def __init__(self, lake: str, args: dict[str, str] | None = None) -> None:
        args = dict(args or {})
        self.lake = lake
        self.url: dict[str, str] = {}
        self.alerts = html_pane("", css_classes=["lens-alerts"], sizing_mode="stretch_width")
        if pn.state.curdoc is not None:
            SESSIONS[pn.state.curdoc] = self
        self.tabs: pn.Tabs | None = None  # the map tab reports its URL values while it is being built
        self.explorer = map_tab = MapTab(lake, args, on_state=self._map_state)
        self.tabs = pn.Tabs(("Map", map_tab.main()), ("Side by side", pn.Column()), ("Compare runs", pn.Column()),
                            ("Diversity", pn.Column()), dynamic=True, sizing_mode="stretch_width")
        layouts = map_tab.picker.layouts
        self.builders = {
            TABS["side"]: lambda: SideBySide(lake, map_tab.con, layouts),
            TABS["compare"]: lambda: ComparisonView(lake, map_tab.con, layouts),
            TABS["diversity"]: lambda: DiversityView(lake, map_tab.con, self.show_on_map),
        }
        self.controls = {TABS["map"]: map_tab.sidebar()}  # each tab's sidebar contents, once built
        self.sidebar = pn.Column(*self.controls[TABS["map"]], sizing_mode="stretch_width", css_classes=["lens-sidebar"])
        self.tabs.param.watch(lambda event: self._tab_changed(event.new), "active")
        if args.get("tab") in TABS:
            self.tabs.active = TABS[args["tab"]]
        elif "tab" in args:
            map_tab.notice(f"ignored URL parameter tab={args['tab']!r}: use one of {', '.join(TABS)}")
        self._map_state(map_tab.url_values())

    def _tab_changed(self, index: int) -> None:
        if index in self.builders:
            view = self.builders.pop(index)()
            if hasattr(view, "controls"):  # its controls go in the sidebar
                self.controls[index] = view.controls()
                self.tabs[index].objects = [view.main()]
            else:
                self.tabs[index].objects = [view.view()]
        self.sidebar.objects = self.controls.get(index) or [html_pane(
            "<div class='lens-help'>This tab's controls are inside it. The Map tab's filters and selection "
            "are kept for when you return.</div>")]
        self._sync_url()

    def _map_state(self, values: dict[str, str]) -> None:
        self.url = values
        self._sync_url()

    def _sync_url(self) -> None:
        """Write the view into the address bar (no reload)."""
        location = pn.state.location
        if location is None:
            return
        tab = "map" if self.tabs is None else next(name for name, index in TABS.items() if index == self.tabs.active)
        values = {k: v for k, v in {**self.url, "tab": "" if tab == "map" else tab}.items() if v}
        location.search = "?" + urllib.parse.urlencode(values)

    def alert(self, text: str) -> None:
        """A notice above the tabs (the latest failure of an action), seen whichever tab is open."""
        self.alerts.object = f"<div class='lens-error lens-alert'>{esc(text)}</div>"

    def show_on_map(self, run_id: str, layer: str, label: str) -> None:
        self.explorer.show_label(run_id, layer, label)
        self.tabs.active = TABS["map"]

    def template(self) -> pn.template.BootstrapTemplate:
        # Bootstrap: the one stock template that fetches nothing from outside the server (no web fonts)
        return pn.template.BootstrapTemplate(title=TITLE, sidebar=[self.sidebar], main=[self.alerts, self.tabs], sidebar_width=310,
                                             header_background="#0072b2")

    def view(self) -> pn.viewable.Viewable:
        """The page without a template (for notebooks)."""
        return pn.Row(pn.Column(self.sidebar, width=330), pn.Column(self.alerts, self.tabs, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width")

    def _repr_mimebundle_(self, include=None, exclude=None):  # shown inline in Jupyter
        return self.view()._repr_mimebundle_(include, exclude)


def show_failure(error: BaseException) -> None:
    """Panel calls this for an exception in any callback of a session (a click, a choice, a message from
    a thumbnail strip): the session's page says what failed, and the server log keeps the traceback."""
    log.error("an action on the page failed", exc_info=error)
    page = SESSIONS.get(pn.state.curdoc) if pn.state.curdoc is not None else None
    first_line = (str(error).splitlines() or [""])[0][:300]
    if page is not None:
        page.alert(f"That did not work: {type(error).__name__}: {first_line}. The page is still usable; "
                   "the server's log has the details.")


def notebook(lake: str = "lake") -> Page:
    """The explorer for a Jupyter notebook: sets up Panel's extension, serves images inline (the notebook
    has no image route), and returns the page; display it, then read selections back with
    `page.explorer.selection()`."""
    pn.extension("tabulator")
    inline_images(lake)
    return Page(lake)


def app() -> pn.viewable.Viewable:
    """The served page (`panel serve`), for the lake in $DMD2_LENS_LAKE."""
    lake = os.environ.get(LAKE_ENV, "lake")
    args = {k: v[0].decode("utf-8", "replace") for k, v in (pn.state.session_args or {}).items() if v}
    try:
        return Page(lake, args).template()
    except RuntimeError as err:
        return html_pane(f"<div class='lens-error'>{esc(err)}</div>")


pn.extension("tabulator", notifications=False, exception_handler=show_failure)
hv.extension("bokeh", logo=False)
RangeXYCallback.debounce = ZOOM_DEBOUNCE_MS

if pn.state.served:
    app().servable(title=f"{TITLE} explorer")
