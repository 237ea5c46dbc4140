"""Driving the dashboard from headless Chromium (Debian's, through Playwright's `executable_path`; no
browser download): shared by the browser tests and the dashboard benchmark."""

from __future__ import annotations

import json
import os
import socket

from dashboards.render import MARKER_COLOURS

CHROMIUM = os.environ.get("DMD2_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-extensions", "--no-first-run"]


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(playwright):
    """Headless Chromium from CHROMIUM ($DMD2_CHROMIUM overrides the path)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


# The first Bokeh plot's frame and ranges, and its position in the page, read in the page.
PLOT_JS = """
() => {
  const plots = (ALL_PLOTS)();
  return plots.length ? plots[0] : null;
}
"""
# Every visible Bokeh plot's frame, data ranges and page position, top to bottom, left to right.
ALL_PLOTS_JS = """
() => {
  const roots = Bokeh.index instanceof Map ? [...Bokeh.index.values()] : Object.values(Bokeh.index);
  const seen = new Set();
  const found = [];
  function walk(v) {
    if (!v || seen.has(v)) return;
    seen.add(v);
    if (v.frame && v.model && v.model.x_range && v.canvas_view) {
      const r = v.canvas_view.el.getBoundingClientRect();
      if (r.width > 0 && r.height > 0 && v.el.isConnected) {
        found.push({x0: v.model.x_range.start, x1: v.model.x_range.end, y0: v.model.y_range.start,
                    y1: v.model.y_range.end, left: r.left + v.frame.bbox.left, top: r.top + v.frame.bbox.top,
                    width: v.frame.bbox.width, height: v.frame.bbox.height, id: v.model.id});
      }
      return;
    }
    for (const c of (v.child_views ? [...v.child_views] : [])) walk(c);
  }
  roots.forEach(walk);
  found.sort((a, b) => (Math.round(a.top) - Math.round(b.top)) || (a.left - b.left));
  return found;
}
"""
PLOT_JS = PLOT_JS.replace("(ALL_PLOTS)", "(" + ALL_PLOTS_JS.strip() + ")")
# For each visible plot (same order as ALL_PLOTS_JS): the roles of its marker points ("selected", ...).
MARKER_ROLES_JS = """
() => {
  const plots = (ALL_PLOTS)();
  const model = (id) => { for (const d of Bokeh.documents) { const m = d.get_model_by_id(id); if (m) return m; } };
  return plots.map(p => {
    const roles = [];
    for (const r of model(p.id).renderers) {
      // the inner ring of each marker is drawn in its role's colour (dashboards.map_view.draw_markers)
      const data = r.data_source && r.data_source.data;
      if (!(r.glyph && r.glyph.type === 'Scatter' && data && data.x)) continue;
      if (data.line_color) { roles.push(...[...data.line_color].map(c => (ROLE_OF)[c]).filter(Boolean)); continue; }
      // one colour for every point: HoloViews sets it on the glyph, not per point
      const v = r.glyph.line_color;
      const role = (ROLE_OF)[typeof v === 'string' ? v : (v && v.value)];
      if (role) roles.push(...Array(data.x.length).fill(role));
    }
    return roles;
  });
}
""".replace("(ALL_PLOTS)", "(" + ALL_PLOTS_JS.strip() + ")").replace(
    "ROLE_OF", json.dumps({colour: role for role, colour in MARKER_COLOURS.items()}))


def plot_geometries(page) -> list[dict]:
    """Every visible map's frame, data ranges and page position (top to bottom, left to right)."""
    return page.evaluate(ALL_PLOTS_JS)


def map_pixels(page, index: int = 0):
    """What a person sees of map `index`: a screenshot of the page clipped to that plot's frame, as an
    (height, width, 3) uint8 array."""
    import io

    import numpy as np
    from PIL import Image

    g = plot_geometries(page)[index]
    clip = {"x": g["left"], "y": g["top"], "width": g["width"], "height": g["height"]}
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"))


def coloured_fraction(pixels) -> float:
    """The share of a map's pixels that are not (near) white: how much of it is drawn."""
    import numpy as np

    return float((np.abs(pixels.astype(int) - 255).sum(2) > 60).mean())

# For each visible plot with a raster (same order as ALL_PLOTS_JS): [plot x0, x1, raster x0, x1]. A map whose
# raster does not span its view is drawn stretched (or leaves a band empty).
RASTER_SPANS_JS = """
() => {
  const plots = (ALL_PLOTS)();
  const model = (id) => { for (const d of Bokeh.documents) { const m = d.get_model_by_id(id); if (m) return m; } };
  const out = [];
  for (const p of plots) {
    for (const r of model(p.id).renderers) {
      if (r.glyph && r.glyph.type === 'ImageRGBA') {
        const d = r.data_source.data;
        out.push([p.x0, p.x1, d.x[0], d.x[0] + d.dw[0]]);
      }
    }
  }
  return out;
}
""".replace("(ALL_PLOTS)", "(" + ALL_PLOTS_JS.strip() + ")")
